"""PNG figures: learning curves, overlays across recipes, confusion matrices, image grids."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

_LABEL = {"loss": "loss", "acc": "accuracy"}
DPI = 110


def _figure(**kw):
    """A matplotlib Figure drawn off screen (Agg, no pyplot state). matplotlib is imported here,
    on first use: its 1 s import is then not paid by the commands that draw nothing (predict,
    export, serve)."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def _colors() -> list[str]:
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _percent(axis) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(1.0))


def _save(fig, path: Path, tight: bool = True) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight" if tight else None)
    tmp.replace(path)


def plot_history(history: list[dict], metric: str, path: Path, title: str = "") -> None:
    """Train against val per epoch for one run. metric: 'loss' or 'acc' (accuracy, not loss)."""
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h[f"train_{metric}"] for h in history], "o-", label="train")
    ax.plot(ep, [h[f"val_{metric}"] for h in history], "s--", label="val")
    _style(ax, metric, title or f"{_LABEL[metric]} per epoch")
    _save(fig, path)


def plot_overlay(histories: dict[str, list[list[dict]]], metric: str, path: Path) -> None:
    """Every recipe on one axis: colour per recipe, solid = train, dashed = val.

    With several seeds per recipe the line is the mean and the band spans mean +- one std."""
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = _colors()
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
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colors = _colors()
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
    _percent(ax.yaxis)
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
        _percent(ax.yaxis)
    ax.legend()


MANY_CLASSES = 10  # above this a confusion matrix of counts stops being readable


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path, title: str = "confusion matrix") -> None:
    """Counts for a few classes; with many, each row normalised to the share of its true class
    (a big class no longer outshines every mistake of a small one), cells annotated up to 25."""
    n = len(classes)
    size = min(16.0, max(4.0, 0.5 * n + 2))
    fig = _figure(figsize=(size, size))
    ax = fig.subplots()
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


# Each image of a grid fits a box of this many pixels, its aspect kept: what a 1.8-inch column
# of subplots showed at DPI.
TILE = 160


def plot_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, title: str = "") -> None:
    """The tutorial's visualize_batch: a grid of images (uint8 RGB, HxWx3, as decode and the
    cache give them), each titled.

    The tiles are pasted into one canvas (PIL resizes each into its box) under one axes, with the
    titles as text: 16 matplotlib subplots took 1.4 s a grid here, and every run draws two (its
    batch and its worst test images in the report); this takes 0.3 s."""
    from PIL import Image

    n = len(images)
    cols = min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    lines = max([t.count("\n") + 1 for t in titles] or [1])
    label_h = 17 * lines + 4  # 9-point lines at DPI, above each tile
    top = 30 if title else 0
    cell_w, cell_h = TILE + 12, TILE + label_h + 8
    canvas = np.full((top + rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    centers = []
    for k, img in enumerate(images):
        tile = Image.fromarray(np.ascontiguousarray(img))
        f = TILE / max(tile.size)  # big images shrink smoothly; small ones (a 32 px digit) grow with sharp pixels
        tile = tile.resize((max(1, round(tile.width * f)), max(1, round(tile.height * f))),
                           Image.NEAREST if f > 1 else Image.BILINEAR)
        r, c = divmod(k, cols)
        y0 = top + r * cell_h + label_h + (TILE - tile.height) // 2
        x0 = c * cell_w + 6 + (TILE - tile.width) // 2
        canvas[y0:y0 + tile.height, x0:x0 + tile.width] = np.asarray(tile)
        centers.append((c * cell_w + cell_w / 2, top + r * cell_h + label_h - 2))
    h, w = canvas.shape[:2]
    fig = _figure(figsize=(w / DPI, h / DPI))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for (x, y), t in zip(centers, titles):
        ax.text(x, y, t, ha="center", va="bottom", fontsize=9, linespacing=1.1)
    if title:
        ax.text(w / 2, top - 6, title, ha="center", va="bottom", fontsize=12)
    _save(fig, path, tight=False)
