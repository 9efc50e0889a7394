"""Run-folder I/O: what a run folder holds, and reading and writing its files.

    config.json        the full config, resolved recipe, model meta, plan, dataset, environment
    status.json        running | done | diverged | interrupted, with the epoch
    history.csv        one row per epoch (HISTORY_COLUMNS)
    checkpoint.pt      the last epoch's state, for --resume (weights_only=True on load)
    model.safetensors  the kept weights, metadata inside; model.json the same metadata
    metrics.json, predictions.csv, confusion.png   the test split (evaluate.py)
    loss.png, accuracy.png (plots.py), report.html (report.py), pretrained.json, tensorboard/

Nothing in a run folder is ever executed or imported: weights are plain tensors, settings are
JSON, and a checkpoint carrying a pickled object is refused instead of loaded.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import ImgclfError
from .files import atomic_write_bytes, prepare_out_dir, read_json, write_csv, write_json

WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
CHECKPOINT = "checkpoint.pt"
HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "steps", "cpu_seconds"]


def start_run_folder(run: Path, resume: bool, force: bool, config: dict, precision: str, meta: dict, ds,
                     environment: dict) -> None:
    """A new run: its folder (refusing to overwrite without force) and config.json. A resumed
    one: the temp files a killed write left behind, swept."""
    if resume:
        sweep_temp_files(run)
    else:
        prepare_out_dir(run, force, "run")
        write_config(run, config, precision, meta, ds, environment)


def write_config(run: Path, config: dict, precision: str, meta: dict, ds, environment: dict) -> None:
    """config.json: everything that reproduces the run, written before any slow step."""
    write_json(run / "config.json", {
        **config, "precision_resolved": precision, "model_meta": meta,
        "dataset": {"root": str(Path(ds.root).resolve()), "manifest_sha256": ds.manifest_sha256,
                    "counts": {s: len(ds.split_rows(s)) for s in ("train", "val", "test")}},
        "environment": environment,
    })


def write_history(run: Path, history: list[dict]) -> None:
    write_csv(run / "history.csv", HISTORY_COLUMNS, ([h.get(c, "") for c in HISTORY_COLUMNS] for h in history))


def save_weights(run: Path, model: torch.nn.Module, meta: dict) -> None:
    """model.safetensors (metadata inside too) + model.json: all that rebuilding the model needs."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(run / WEIGHTS, save(state, metadata={"imgclf": json.dumps(meta)}))
    write_json(run / MODEL_META, meta)


def load_model(run: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from a run folder: (model in eval mode, meta)."""
    from .models import create_model

    run = Path(run)
    if not (run / WEIGHTS).is_file():
        raise ImgclfError(f"{run} has no {WEIGHTS}; is it a finished `imgclf train` run folder?")
    meta = read_json(run / MODEL_META)
    try:
        state = load_file(str(run / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ImgclfError(f"{run / WEIGHTS} is not a valid safetensors file ({e})") from None
    model = create_model(meta["model"], len(meta["classes"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ImgclfError(f"{run / WEIGHTS} does not match model {meta['model']}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), meta


def save_checkpoint(run: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(run / CHECKPOINT, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """weights_only=True: tensors and plain containers only, so a tampered file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ImgclfError(f"no checkpoint at {path}; nothing to resume") from None
    except pickle.UnpicklingError as e:
        raise ImgclfError(
            f"refusing to load {path}: it holds pickled objects, not just tensors (tampered or foreign "
            f"checkpoint): {str(e).splitlines()[0][:160]}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise ImgclfError(f"checkpoint {path} is unreadable or cut short ({str(e).splitlines()[0][:160]})") from None


def sweep_temp_files(run: Path) -> None:
    """Remove half-written temp files a killed process left behind (the real files are intact)."""
    for p in Path(run).glob(".*.tmp*"):
        p.unlink(missing_ok=True)


def read_config(run: Path | str) -> dict:
    run = Path(run)
    if not (run / "config.json").is_file():
        raise ImgclfError(f"{run} is not a run folder (no config.json)")
    return read_json(run / "config.json")


def write_status(run: Path, status: str, **extra) -> None:
    write_json(run / "status.json", {"status": status, **extra})


def read_status(run: Path) -> dict:
    p = Path(run) / "status.json"
    return read_json(p) if p.is_file() else {"status": "missing"}
