"""Stratified, seeded train/val/test assignment."""

from __future__ import annotations

import numpy as np

from .errors import ImgclfError

SPLITS = ("train", "val", "test")


def check_fractions(val: float, test: float) -> None:
    for name, v in (("--val", val), ("--test", test)):
        if not 0.0 <= v < 1.0:
            raise ImgclfError(f"{name} must be a fraction in [0, 1), got {v}")
    if val + test >= 1.0:
        raise ImgclfError(f"--val + --test must leave room for training, got {val} + {test} >= 1")


def assign_splits(labels: list[str], val: float, test: float, seed: int) -> list[str]:
    """Split each class on its own, so every split keeps the class balance of the whole.

    Items are assumed to arrive in a stable order (prepare sorts them), so the same seed
    gives the same split on any machine.
    """
    check_fractions(val, test)
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    for c in sorted(by_class):
        idx = np.array(by_class[c])
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = int(round(n * test))
        n_val = int(round(n * val))
        if n >= 3:  # keep at least one training image whenever the class allows it
            n_test = min(n_test, n - 1)
            n_val = min(n_val, n - 1 - n_test)
        for j, i in enumerate(idx):
            out[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out
