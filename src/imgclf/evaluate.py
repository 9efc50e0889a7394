"""Stage 5: predictions on a split, scikit-learn metrics, confusion matrix, saved predictions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from .cache import CachedSplit
from .device import autocast
from .errors import ImgclfError
from .files import write_csv, write_json
from .load import batches, resize_batch


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


def tta_logits(model, x: torch.Tensor, tta: bool, sizes: tuple[int, ...] | list[int] = (),
               more: tuple[torch.Tensor, ...] | list[torch.Tensor] = ()) -> torch.Tensor:
    """The model's float logits for a normalised batch. Test-time augmentation: `more` adds the
    same images decoded at other sizes, `sizes` the batch resized to each of these sizes, `tta` the
    mirror of every view; the result is then the log of the views' mean softmax (so its softmax is
    the averaged probability, and losses stay comparable with a single view's)."""
    views = [x, *more] + [resize_batch(x, s) for s in sizes]
    if tta:
        views += [v.flip(3) for v in views]
    if len(views) == 1:
        return model(x).float()
    logp = torch.stack([model(v).float().log_softmax(1) for v in views])
    return torch.logsumexp(logp, 0) - math.log(len(views))


def view_sizes(meta: dict) -> tuple[list[int], list[int]]:
    """A run's extra test-time views as (sizes decoded from the image file, sizes the evaluation
    batch is resized to). Runs record `tta_decode` since the views came from the file: resizing
    the 72 px batch to 64 px blurs the view (+0.1 test points over flips alone at 64 px, against
    +0.6 decoded; BENCHMARKS.md); older runs keep the resized views they were scored with."""
    sizes = [int(s) for s in meta.get("tta_sizes", [])]
    return (sizes, []) if meta.get("tta_decode") else ([], sizes)


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy (a fraction), per-class and macro precision/recall/F1, confusion matrix."""
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        # the mean of the recalls of the classes present: what accuracy hides on imbalanced data
        "balanced_accuracy": float(np.mean([r[i] for i in range(len(classes)) if s[i] > 0])) if len(y_true) else 0.0,
        "macro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
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
    from .plots import plot_confusion
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
