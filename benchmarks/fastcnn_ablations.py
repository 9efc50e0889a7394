"""fastcnn ablations: each recipe choice switched off (or swapped) one at a time, same model, data and epochs.

    python benchmarks/fastcnn_ablations.py [--data DIR] [--model fastcnn-s] [--epochs 15] [--only a,b]

DATA is a dataset folder from `imgclf prepare` (default: ../shared/data/petimages prepared
into a temp folder with the tutorial's split). Every variant trains from the same seed; the
evaluation-only choices (flip TTA, the evaluation size, the training-size views) are scored on the
baseline's own weights. Prints test accuracy
and training seconds per variant, with the difference to the bundled recipe.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("IMGCLF_QUIET", "1")

from common import imgclf, machine, need_shared, table  # noqa: E402

# name: (what changes, Recipe overrides)
VARIANTS = {
    "bundled": ("the bundled recipe", {}),
    "no-label-smoothing": ("label_smoothing 0.1 -> 0", {"label_smoothing": 0.0}),
    "no-shifts": ("translate 1/16 -> 0 (flips only)", {"translate": 0.0}),
    "no-muon": ("Muon for the filters -> nesterov SGD for all (weight decay on)", {"muon": None}),
    "momentum": ("nesterov -> plain momentum", {"nesterov": False}),
    "decay-bn-bias": ("weight decay on BN and biases too", {"decay_norm_bias": True}),
    "cosine": ("one-cycle -> cosine decay, no warm-up", {"schedule": "cosine"}),
    "adam": ("SGD -> Adam lr 1e-3 (the tutorial's best preset), same schedule", {"optimizer": "adam", "lr": 1e-3,
                                                                              "momentum": None, "nesterov": None,
                                                                              "muon": None}),
    "ema": ("evaluate an EMA of the weights (decay 0.99 per step)", {"ema": 0.99}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path)
    ap.add_argument("--model", default="fastcnn-s")
    ap.add_argument("--size", type=int)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(VARIANTS))
    args = ap.parse_args()

    from imgclf.models import get_spec
    from imgclf.train import TrainConfig, train

    tmp = Path(tempfile.mkdtemp(prefix="imgclf-abl-"))
    data = args.data
    if data is None:
        data = tmp / "data"
        imgclf("prepare", need_shared() / "petimages", "--out", data)
    base = get_spec(args.model).recipe
    rows, ref = [], None
    for name in args.only.split(","):
        what, overrides = VARIANTS[name]
        recipe = replace(base, **overrides)
        r = train(TrainConfig(data=data, out=tmp / name, model=args.model, recipe=recipe, epochs=args.epochs,
                              size=args.size, seed=args.seed, report=False))
        acc = r.metrics["accuracy"]
        ref = acc if name == "bundled" else ref
        rows.append([name, what, f"{acc:.2%}", _delta(acc, ref), f"{r.seconds:.0f}"])
        print(rows[-1], flush=True)
        if name == "bundled":  # evaluation-only choices: rescored on the same weights
            train_size = _train_size(tmp / name)
            for label, what, tta, size, sizes in [
                ("no-train-size-tta", f"no views at the training size ({train_size} px)", True, None, []),
                ("no-tta", "flip TTA off (training-size views kept)", False, None, None),
                ("no-eval-scale", f"evaluate at the training size ({train_size} px) only, flip TTA", True,
                 train_size, []),
                ("neither", "no TTA, training size", False, train_size, []),
            ]:
                acc = _rescore(tmp / name, tta, size, sizes)
                rows.append([label, f"{what} (same weights as bundled)", f"{acc:.2%}", _delta(acc, ref), "-"])
                print(rows[-1], flush=True)
    print(f"\nmachine: {machine()}; {args.model}, {args.epochs} epochs, seed {args.seed}, data {data}\n")
    print(table(["variant", "change", "test acc", "vs bundled", "train+eval s"], rows))


def _delta(acc: float, ref: float | None) -> str:
    return "-" if ref is None or acc == ref else f"{(acc - ref) * 100:+.2f} pts"


def _train_size(run: Path) -> int:
    from imgclf.files import read_json

    return read_json(run / "model.json")["train_size"]


def _rescore(run: Path, tta: bool, size: int | None, sizes: list[int] | None) -> float:
    """Test accuracy of a finished run's weights, with or without flip TTA, at `size` and with the
    views decoded at `sizes` (None: as saved)."""

    from imgclf.cache import open_cache
    from imgclf.device import pick_device, resolve_precision
    from imgclf.evaluate import predict_logits
    from imgclf.views import view_sizes
    from imgclf.load import input_fn
    from imgclf.manifest import load_dataset
    from imgclf.runfolder import load_model, read_config

    cfg = read_config(run)
    dev = pick_device("cpu")
    model, meta = load_model(run, dev)
    ds = load_dataset(cfg["data"])
    decoded, resized = view_sizes(meta) if sizes is None else (sizes, [])
    split = open_cache(ds, size or meta["input_size"])["test"]
    logits = predict_logits(model, split, input_fn(dev, meta["mean"], meta["std"], False), dev,
                            resolve_precision("auto", dev), tta=tta, sizes=resized,
                            views=[open_cache(ds, s)["test"] for s in decoded])
    return float((logits.argmax(1) == split.labels).mean())


if __name__ == "__main__":
    main()
