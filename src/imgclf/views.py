"""Test-time views: which extra sizes a run's images are decoded at, and how the views' answers combine.

One place for the rule that evaluation, predict, export and serve must all follow to score a
run the way it was scored: the image, its mirror (Recipe.tta), and the image decoded at each of
the run's extra sizes (Recipe.tta_scales), their softmax averaged.
"""

from __future__ import annotations

import math

import torch

from .load import resize_batch


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
