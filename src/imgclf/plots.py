"""PNG figures: learning curves, overlays across recipes, confusion matrices, image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_LABEL = {"loss": "loss", "acc": "accuracy"}


def _save(fig, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def plot_history(history: list[dict], metric: str, path: Path, title: str = "") -> None:
    """Train against val per epoch for one run. metric: 'loss' or 'acc' (accuracy, not loss)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h[f"train_{metric}"] for h in history], "o-", label="train")
    ax.plot(ep, [h[f"val_{metric}"] for h in history], "s--", label="val")
    _style(ax, metric, title or f"{_LABEL[metric]} per epoch")
    _save(fig, path)


def plot_overlay(histories: dict[str, list[list[dict]]], metric: str, path: Path) -> None:
    """Every recipe on one axis: colour per recipe, solid = train, dashed = val.

    With several seeds per recipe the line is the mean and the band spans mean +- one std."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(histories.items()):
        runs = [h for h in runs if h]
        if not runs:
            continue
        c = colors[i % len(colors)]
        n = min(len(h) for h in runs)  # time budgets can end seeds at different epochs
        ep = [h["epoch"] for h in runs[0][:n]]
        for part, style in (("train", "o-"), ("val", "s--")):
            a = np.array([[h[f"{part}_{metric}"] for h in run[:n]] for run in runs])
            mean = a.mean(0)
            ax.plot(ep, mean, style, color=c, label=f"{name} {part}" + (f" (mean of {len(runs)})" if len(runs) > 1 else ""))
            if len(runs) > 1:
                std = a.std(0, ddof=1)
                ax.fill_between(ep, mean - std, mean + std, color=c, alpha=0.15, linewidth=0)
    _style(ax, metric, f"{_LABEL[metric]} per epoch, by recipe")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_lr_search(rows: list[dict], chosen: dict[str, float], path: Path) -> None:
    """Val accuracy against learning rate (log axis) per recipe; the chosen lr is circled."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(dict.fromkeys(r["recipe"] for r in rows)):
        pts = [(r["lr"], r["val_acc"]) for r in rows if r["recipe"] == name and r["status"] == "done"]
        if not pts:
            continue
        c = colors[i % len(colors)]
        ax.plot(*zip(*pts), "o-", color=c, label=name)
        best = [p for p in pts if p[0] == chosen.get(name)]
        if best:
            ax.plot(*best[0], "o", markersize=14, markerfacecolor="none", markeredgecolor=c)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("val accuracy")
    ax.set_title("learning-rate search (circled: chosen)")
    ax.grid(alpha=0.3)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(fontsize=8)
    _save(fig, path)


def _style(ax, metric: str, title: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(_LABEL[metric])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if metric == "acc":  # zoomed to the data: 93% against 95% must not look like one line at the top
        ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()] or [np.zeros(0)])
        ys = ys[np.isfinite(ys)]
        if ys.size:
            lo, hi = float(ys.min()), float(ys.max())
            pad = max(0.005, 0.08 * (hi - lo))
            ax.set_ylim(max(0.0, lo - pad), min(1.005, hi + pad))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend()


MANY_CLASSES = 10  # above this a confusion matrix of counts stops being readable


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "confusion matrix") -> None:
    """Counts for a few classes; with many, each row normalised to the share of its true class
    (a big class no longer outshines every mistake of a small one), cells annotated up to 25."""
    n = len(classes)
    size = min(16.0, max(4.0, 0.5 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    many = n > MANY_CLASSES
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if many else cm
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if many else None)
    ax.set_xticks(range(n), classes, rotation=45 if n <= 25 else 90, ha="right" if n <= 25 else "center",
                  fontsize=8 if n <= 25 else 6)
    ax.set_yticks(range(n), classes, fontsize=8 if n <= 25 else 6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + (" (share of each true class)" if many else ""))
    hi = shown.max() if shown.size else 0
    if n <= 25:
        for i in range(n):
            for j in range(n):
                text = (f"{shown[i, j]:.0%}" if shown[i, j] else "") if many else str(cm[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if many else 8,
                        color="white" if shown[i, j] > hi / 2 else "black")
    _save(fig, path)


def plot_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, title: str = "") -> None:
    """The tutorial's visualize_batch: a grid of images, each titled with its class."""
    n = len(images)
    cols = min(8, max(1, int(np.ceil(np.sqrt(n)))))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img)
        ax.set_title(t, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
