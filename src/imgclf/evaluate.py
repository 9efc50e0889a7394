"""Stage 5: predictions on a split, its metrics, confusion matrix, saved predictions.

`evaluate_model` scores a trained model on a cached split (train.py's last step), `evaluate_run`
re-scores a finished run, `evaluate_folder` scores it on any labelled folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import CachedSplit, open_cache
from .device import autocast, pick_device, resolve_precision
from .errors import ImgclfError
from .files import write_csv, write_json
from .load import batches, input_fn
from .manifest import load_dataset
from .plots import plot_confusion
from .runfolder import load_model, read_config
from .views import tta_logits, view_sizes


@torch.no_grad()
def predict_logits(model, split: CachedSplit, to_input, device, precision: str, batch_size: int = 256,
                   tta: bool = False, sizes: tuple[int, ...] | list[int] = (),
                   views: tuple[CachedSplit, ...] | list[CachedSplit] = ()) -> np.ndarray:
    """Logits (N, classes) in float32 for a cached split, in stored order (see `tta_logits`).
    `views`: the same split cached at other sizes (`view_sizes`), read batch by batch beside it."""
    for v in views:
        if v.paths != split.paths:
            raise ImgclfError("a test-time view's cache holds other images than the split it joins; "
                              "re-run `imgclf prepare`")
    model.eval()
    out = []
    for group in zip(*(batches(s, batch_size, shuffle=False) for s in (split, *views))):
        with autocast(device, precision):
            x, *more = (to_input(xb) for xb, _ in group)
            out.append(tta_logits(model, x, tta, sizes, more).cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


def evaluate_model(model, meta, split: CachedSplit, split_name: str, run: Path, device, precision: str,
                   channels_last: bool, batch_size: int = 256, to_input=None, views=()) -> dict:
    """Metrics on one split; writes metrics(.json), predictions and the confusion matrix PNG.
    `views`: the split cached at the run's decoded test-time sizes (`view_sizes`)."""
    to_input = to_input or input_fn(device, meta["mean"], meta["std"], channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    logits = predict_logits(model, split, to_input, device, precision, batch_size, tta=meta.get("tta", False),
                            sizes=view_sizes(meta)[1], views=views)
    return write_evaluation(logits, meta["classes"], split, split_name, run)


def write_evaluation(logits: np.ndarray, classes: list[str], split: CachedSplit, split_name: str, run: Path) -> dict:
    """Metrics of a split's logits; writes metrics(.json), predictions and the confusion matrix PNG."""
    loss, probs, losses = loss_and_predictions(logits, split.labels)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    metrics = {"split": split_name, "loss": loss, **compute_metrics(split.labels, pred, classes)}
    suffix = "" if split_name == "test" else f"-{split_name}"
    write_json(run / f"metrics{suffix}.json", metrics)
    save_predictions(run / f"predictions{suffix}.csv", split, probs, losses, classes)
    plot_confusion(np.array(metrics["confusion_matrix"]), classes, run / f"confusion{suffix}.png",
                   f"confusion matrix ({split_name})")
    return metrics


def evaluate_run(run: Path | str, split: str = "test", data: Path | str | None = None,
                 device: str = "auto") -> dict:
    """Re-evaluate a finished run on a split of its dataset (or of `data`, prepared the same way)."""
    run = Path(run)
    cfg = read_config(run)
    dev = pick_device(device)
    model, meta = load_model(run, dev)
    ds = load_dataset(data or cfg["data"])
    if ds.classes != meta["classes"]:
        raise ImgclfError(f"dataset classes {ds.classes} differ from the run's {meta['classes']}")
    ds.split_rows(split)  # validates the split name
    cached = open_cache(ds, meta["input_size"])[split]
    views = [open_cache(ds, s)[split] for s in view_sizes(meta)[0]]
    precision = resolve_precision(cfg.get("precision", "auto"), dev)
    return evaluate_model(model, meta, cached, split, run, dev, precision, cfg.get("channels_last", True),
                          views=views)


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy (a fraction), per-class and macro precision/recall/F1, confusion matrix.

    Counted from the confusion matrix with numpy, as scikit-learn defines them (zero_division=0,
    the macro mean over every class); scikit-learn's import alone cost every command that
    evaluates 2.0 s (it pulls in pandas and scipy). test_evaluate checks the two agree."""
    k = len(classes)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp, support, predicted = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
    div = lambda a, b: np.divide(a, b, out=np.zeros(k), where=b > 0)  # noqa: E731
    p, r = div(tp, predicted), div(tp, support)
    f = div(2 * tp, support + predicted)  # 2tp / (2tp + fp + fn), zero where a class is absent and never predicted
    return {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / len(y_true)) if len(y_true) else 0.0,
        # the mean of the recalls of the classes present: what accuracy hides on imbalanced data
        "balanced_accuracy": float(r[support > 0].mean()) if len(y_true) else 0.0,
        "macro": {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean())},
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def confused_pairs(cm, classes: list[str], k: int = 10) -> list[tuple[str, str, int, float]]:
    """The k most frequent mistakes: (true, predicted, count, share of the true class's images)."""
    cm = np.asarray(cm)
    pairs = [(cm[i, j], i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j and cm[i, j]]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(classes[i], classes[j], int(c), float(c / max(cm[i].sum(), 1))) for c, i, j in pairs[:k]]


def loss_and_predictions(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    t = torch.from_numpy(logits)
    y = torch.from_numpy(labels)
    losses = F.cross_entropy(t, y, reduction="none") if len(y) else torch.zeros(0)
    probs = t.softmax(1).numpy() if len(y) else np.zeros_like(logits)
    return float(losses.mean()) if len(y) else float("nan"), probs, losses.numpy()


def save_predictions(path: Path, split: CachedSplit, probs: np.ndarray, losses: np.ndarray, classes: list[str]) -> None:
    """One row per image: the evidence behind every metric, so anyone can recount them."""
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    rows = (
        [p, classes[t], classes[k], f"{probs[i, k]:.6f}", f"{losses[i]:.6f}", *(f"{v:.6f}" for v in probs[i])]
        for i, (p, t, k) in enumerate(zip(split.paths, split.labels, pred))
    )
    write_csv(path, ["path", "true", "pred", "prob", "loss", *(f"p_{c}" for c in classes)], rows)


def evaluate_folder(run: Path | str, folder: Path | str, device: str = "auto", batch_size: int = 64,
                    labels_from_filename: bool | None = None) -> tuple[dict, Path]:
    """Score a run on every image of a labelled folder, not prepared: class sub-folders, or
    Kaggle-style names (`cat.12.jpg`; chosen by what the folder holds unless told). Classes match
    the run's by name, ignoring case (PetImages' `Cat` is Kaggle's `cat`); a class the run does not
    know is an error. Files are decoded exactly as predict does; unreadable ones are listed in
    rejected.csv and left out. Writes RUN/eval-<folder name>/: metrics.json, predictions.csv,
    confusion.png. Returns (metrics, that folder)."""
    from .classifier import Classifier
    from .errors import DecodeError
    from .progress import make_progress
    from .scan import scan

    run, folder = Path(run), Path(folder)
    if labels_from_filename is None:
        labels_from_filename = folder.is_dir() and not any(
            d.is_dir() and not d.name.startswith(".") for d in folder.iterdir())
    found = scan(folder, labels_from_filename, min_classes=1)
    clf = Classifier(run, device=device, batch_size=batch_size)
    by_name = {c.lower(): i for i, c in enumerate(clf.classes)}
    unknown = sorted(c for c in found.classes if c.lower() not in by_name)
    if unknown:
        raise ImgclfError(f"{folder} has classes the run does not know: {', '.join(unknown)} (the run's: "
                          f"{', '.join(clf.classes)}); remove them or evaluate a run trained on them")
    if not found.files:
        raise ImgclfError(f"{folder} holds no labelled images")
    paths, labels, probs, rejected = [], [], [], []
    with make_progress("img") as bar:
        task = bar.add_task(f"evaluate {folder.name}", total=len(found.files))
        for b0 in range(0, len(found.files), batch_size):
            batch, ys, ps = [], [], []
            for p, c in found.files[b0 : b0 + batch_size]:
                try:
                    batch.append(clf.decode(p))
                    ys.append(by_name[c.lower()])
                    ps.append(str(p))
                except DecodeError as e:
                    rejected.append([str(p), c, str(e)])
            if batch:
                probs.append(clf.predict_views([np.stack(v) for v in zip(*batch)]))
                paths += ps
                labels += ys
            bar.advance(task, len(found.files[b0 : b0 + batch_size]))
    if not paths:
        raise ImgclfError(f"none of the {len(found.files)} images in {folder} could be read (see their reasons with "
                          f"`imgclf predict {run} {folder}`)")
    y, p = np.array(labels), np.concatenate(probs)
    loss, _, losses = loss_and_predictions(np.log(np.clip(p, 1e-12, None)).astype(np.float32), y)
    metrics = {"split": f"folder {folder.resolve()}", "loss": loss, "rejected": len(rejected),
               **compute_metrics(y, p.argmax(1), clf.classes)}
    out = run / f"eval-{folder.resolve().name}"
    out.mkdir(exist_ok=True)
    write_json(out / "metrics.json", metrics)
    save_predictions(out / "predictions.csv", CachedSplit(images=None, labels=y, paths=paths), p, losses, clf.classes)
    write_csv(out / "rejected.csv", ["path", "class", "reason"], rejected)
    plot_confusion(np.array(metrics["confusion_matrix"]), clf.classes, out / "confusion.png",
                   f"confusion matrix ({folder.name})")
    return metrics, out
