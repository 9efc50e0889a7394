"""Stage 7: classify image files and folders with a trained run (the CLI's `predict`).

The model and its preprocessing live in classifier.Classifier; this module finds the files,
shows progress on large folders, and keeps every bad file on a line of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from .classifier import Classifier, check_top_k
from .decode import IMAGE_EXTENSIONS
from .errors import ImgclfError


def expand_inputs(inputs: list[Path | str]) -> list[Path]:
    """Files as given; folders walked for image files (hidden ones skipped), in sorted order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for dirpath, dirnames, files in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [Path(dirpath) / f for f in sorted(files)
                        if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        else:
            out.append(p)  # missing or odd files are reported per line, not fatal
    return out


def predict(run: Path | str, inputs: list[Path | str], batch_size: int = 64, device: str = "auto",
            top_k: int = 1) -> list[dict]:
    """One dict per file: path, class, prob (of that class), top_k, probs per class, or error."""
    clf = Classifier(run, device=device, batch_size=batch_size)
    top_k = check_top_k(top_k, clf.classes)
    paths = expand_inputs(inputs)
    if not paths:
        raise ImgclfError("no image files found in the given paths")
    from .progress import make_progress

    with make_progress("img") as bar:
        task = bar.add_task("predict", total=len(paths))
        return clf.predict(paths, top_k=top_k, on_batch=lambda n: bar.advance(task, n))
