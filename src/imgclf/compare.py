"""Stage 6: the tutorial's experiment. One model, one set of initial weights, one split; one
training run per optimizer recipe; then overlaid curves and a ranking on the test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .cache import open_cache
from .errors import Diverged, ImgclfError
from .files import prepare_out_dir, read_csv, read_json, write_csv, write_json
from .manifest import load_dataset
from .models import create_model, get_spec
from .plots import plot_overlay
from .progress import console, default_workers
from .recipes import PRESETS, TUTORIAL_PRESETS, Recipe
from .runfolder import read_status
from .train import TrainConfig, train

SUMMARY_COLUMNS = [
    "rank", "recipe", "status", "optimizer", "lr", "batch_size", "momentum", "epochs",
    "test_accuracy", "test_precision", "test_recall", "test_f1", "test_loss",
    "final_train_loss", "final_train_acc", "final_val_loss", "final_val_acc", "seconds", "diverged_epoch",
]


@dataclass
class CompareConfig:
    data: Path
    out: Path
    recipes: list[Recipe] = field(default_factory=lambda: [PRESETS[n] for n in TUTORIAL_PRESETS])
    model: str = "seed-cnn"
    epochs: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    hflip: bool = True
    vflip: bool = False
    workers: int = field(default_factory=default_workers)
    force: bool = False

    def validate(self) -> "CompareConfig":
        if not self.recipes:
            raise ImgclfError("--optimizers: give at least one recipe")
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ImgclfError(f"--optimizers: recipe names must be unique, got {names}")
        for r in self.recipes:
            r.validate()
        get_spec(self.model)
        if self.epochs < 1:
            raise ImgclfError(f"--epochs must be >= 1, got {self.epochs}")
        return self

    def run_config(self, recipe: Recipe) -> TrainConfig:
        return TrainConfig(
            data=self.data, out=Path(self.out) / "runs" / recipe.name, model=self.model, recipe=recipe,
            epochs=recipe.epochs or self.epochs, seed=self.seed, device=self.device, precision=self.precision,
            channels_last=self.channels_last, hflip=self.hflip, vflip=self.vflip, workers=self.workers,
        )


def compare(cfg: CompareConfig, resume: bool = False) -> list[dict]:
    """Train every recipe (skipping finished ones on resume) and rank them; returns summary rows."""
    cfg.validate()
    out = Path(cfg.out)
    if resume:
        if not (out / "compare.json").is_file():
            raise ImgclfError(f"{out} is not a comparison folder (no compare.json); nothing to resume")
    else:
        prepare_out_dir(out, cfg.force, "comparison")
        write_json(out / "compare.json", {
            "data": str(Path(cfg.data).resolve()), "model": cfg.model, "epochs": cfg.epochs, "seed": cfg.seed,
            "recipes": [r.to_dict() for r in cfg.recipes],
            "settings": {k: getattr(cfg, k) for k in ("device", "precision", "channels_last", "hflip", "vflip")},
        })

    ds = load_dataset(cfg.data)
    open_cache(ds, get_spec(cfg.model).input_size, workers=cfg.workers)  # build once, up front
    init_state = _initial_weights(out, cfg, len(ds.classes))

    for recipe in cfg.recipes:
        rc = cfg.run_config(recipe)
        status = read_status(rc.out)["status"] if resume else "missing"
        if status in ("done", "diverged"):
            console.print(f"[dim]{recipe.name}: already {status}, skipped[/dim]")
            continue
        console.print(f"[bold]recipe {recipe.name}[/bold]: {recipe.description or recipe.optimizer}")
        try:
            train(rc, init_state=init_state, resume=resume and (rc.out / "checkpoint.pt").is_file())
        except Diverged as e:
            console.print(f"[red]{recipe.name} diverged[/red] ({e}); the other recipes carry on")

    rows = summarize(out, cfg)
    histories = {r["recipe"]: _history(out / "runs" / r["recipe"]) for r in rows}
    plot_overlay(histories, "loss", out / "loss.png")
    plot_overlay(histories, "acc", out / "accuracy.png")
    return rows


def _initial_weights(out: Path, cfg: CompareConfig, num_classes: int) -> dict:
    """One random init, saved, shared by every recipe: differences come from the optimizer alone."""
    path = out / "init.safetensors"
    if path.is_file():
        return load_file(str(path))
    torch.manual_seed(cfg.seed)
    state = {k: v.contiguous() for k, v in create_model(cfg.model, num_classes).state_dict().items()}
    save_file(state, str(path))
    return state


def _history(run: Path) -> list[dict]:
    p = run / "history.csv"
    if not p.is_file():
        return []
    return [{k: float(v) for k, v in row.items()} for row in read_csv(p)]


def summarize(out: Path, cfg: CompareConfig) -> list[dict]:
    """Collect every recipe's outcome, rank finished ones by test accuracy, write summary files."""
    rows = []
    for r in cfg.recipes:
        run = out / "runs" / r.name
        st = read_status(run)
        hist = _history(run)
        last = hist[-1] if hist else {}
        row = {
            "recipe": r.name, "status": st["status"], "optimizer": r.optimizer, "lr": r.lr,
            "batch_size": r.batch_size, "momentum": r.momentum if r.momentum is not None else "",
            "epochs": len(hist), "final_train_loss": last.get("train_loss", ""),
            "final_train_acc": last.get("train_acc", ""), "final_val_loss": last.get("val_loss", ""),
            "final_val_acc": last.get("val_acc", ""), "seconds": round(sum(h["seconds"] for h in hist), 2),
            "diverged_epoch": st.get("epoch", "") if st["status"] == "diverged" else "",
        }
        if st["status"] == "done":
            m = read_json(run / "metrics.json")
            row.update(test_accuracy=m["accuracy"], test_precision=m["macro"]["precision"],
                       test_recall=m["macro"]["recall"], test_f1=m["macro"]["f1"], test_loss=m["loss"])
        rows.append(row)
    done = sorted((r for r in rows if r["status"] == "done"), key=lambda r: -r["test_accuracy"])
    rest = [r for r in rows if r["status"] != "done"]
    for i, r in enumerate(done, 1):
        r["rank"] = i
    ranked = done + rest
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, ([r.get(c, "") for c in SUMMARY_COLUMNS] for r in ranked))
    (out / "ranking.md").write_text(ranking_markdown(ranked), encoding="utf-8")
    return ranked


def ranking_markdown(rows: list[dict]) -> str:
    lines = [
        "| rank | recipe | test accuracy | precision | recall | F1 | wall time |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] == "done":
            lines.append(
                f"| {r['rank']} | {r['recipe']} | {r['test_accuracy']:.2%} | {r['test_precision']:.3f} | "
                f"{r['test_recall']:.3f} | {r['test_f1']:.3f} | {r['seconds']:.1f} s |"
            )
        else:
            where = f" at epoch {r['diverged_epoch']}" if r["status"] == "diverged" else ""
            lines.append(f"| - | {r['recipe']} | {r['status']}{where} | | | | {r['seconds']:.1f} s |")
    return "\n".join(lines) + "\n"

