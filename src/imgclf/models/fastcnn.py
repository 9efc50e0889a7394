"""`fastcnn-s/m/l` (and -p3/-p4/-p3w stems): small from-scratch CNNs built for accuracy per second on a CPU (and GPU).

In the spirit of Keller Jordan's airbench (CIFAR-10 speedruns), resized for photos of pets:

    stem    Conv 2x2 stride 2 (patchify) -> BN -> GELU                 halves the image for almost no compute
    stage   Conv 3x3 -> MaxPool 2 -> BN -> GELU -> [Conv 3x3 -> BN -> GELU]   x 3 stages, widths doubling
    head    global max pool -> Linear (no bias)

Why each piece (measurements in docs/experiments.md; summary in BENCHMARKS.md, "What was tried"):
- Patchify stem: a 2x2/2 conv sees every pixel once; a 3x3 conv at full resolution would cost
  about as much as the whole rest of the network. `-p3` / `-p4` take 3x3 / 4x4 patches instead: at
  96 / 128 px the stages see the same 32x32 grid, at about the same cost, as the 2x2 stem at 64 px,
  from 2.25x / 4x the pixels: +0.5 test points in the same seconds (docs/experiments.md, "The patch-3 stem").
- Pool *after* each stage's first conv, as airbench does. Pooling first is 1.5x the images per
  second here but measured 1.3 points worse at equal epochs (88.4% vs 89.7%, fastcnn-s, 30 epochs).
- BatchNorm after every conv, convs without bias (BN's shift makes a bias redundant).
- GELU: smooth, suits the short high-learning-rate schedules of the recipe below.
- Global *max* pool: "is there a cat's ear anywhere" beats averaging over the background.
- Input size is free (global pooling): the registry's size is the default, `--size` picks another.
- `-p3w`: the patch-3 stem whitened, after airbench. Its 32 filters are not learned but set from the
  training images before training (`whiten_stem`) and frozen: the 16 principal directions of the
  3x3 patches with the most variance, each scaled to unit variance, and their negatives (after
  BN + GELU a pair passes both signs of a direction). Stages then start from decorrelated
  inputs and learn faster early; the stem's BN still learns its scale and shift, and Muon sees
  only the stages' filters: +0.17 to +0.97 test points over -p3 in eight pairs at 8-26 epochs, at
  the same cost per step (docs/experiments.md, "The whitened stem with BN"), so the plan's
  patch-3 rungs are -p3w.

The bundled recipe (RECIPE, below) is what `imgclf train DATA` uses when no optimizer is named.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from ..optim import Recipe
from . import register_model



class Variant(NamedTuple):
    stem: int  # stem width
    widths: tuple[int, ...]  # stage widths
    depth: int  # convs per stage
    patch: int  # stem patch (and stride)
    size: int  # default input size
    whiten: bool = False  # the stem's filters set from the training images and frozen (whiten_stem)


# One place for every hyperparameter of the family and its recipe.
VARIANTS = {
    "fastcnn-s": Variant(32, (64, 128, 256), 2, 2, 64),
    "fastcnn-m": Variant(48, (96, 192, 384), 2, 2, 96),
    "fastcnn-l": Variant(64, (128, 256, 512), 2, 2, 128),
    "fastcnn-s-p3": Variant(32, (64, 128, 256), 2, 3, 96),
    "fastcnn-s-p4": Variant(32, (64, 128, 256), 2, 4, 128),
    "fastcnn-s-p3w": Variant(32, (64, 128, 256), 2, 3, 96, whiten=True),
}
# The input sizes the family is tuned and benchmarked at (2x2 stem), and the sizes that give the
# other stems the same grids after them
SIZES = {p: tuple(s * p // 2 for s in (64, 80, 96, 128, 160)) for p in (2, 3, 4)}
# Inputs scaled to about [-2, 2]. The stem conv feeds BatchNorm, so the input's scale only sets the
# stem's effective learning rate (BN makes the layer scale-invariant: effective lr ~ lr / |W|^2).
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# The whitened stem's statistics. From 1,000 images evenly spread over the split (1.6M patches at
# 120 px) the whitening (W^T W) came within 3% of the one from 5,000 (PetImages), for a fifth of
# the seconds: about 1 s on one core in float32, the patches centred at 0.5 first so that the
# covariance does not cancel.
WHITEN_IMAGES = 1000
# Added to each direction's variance (pixels in [0, 1]) before scaling by 1 / sqrt. airbench's 5e-4
# amplified directions that are mostly interpolation or JPEG noise up to 45x, their variance
# changing with the evaluation size, and left a net trained on small upscaled images at chance;
# 1e-2 did not (docs/experiments.md, "The whitened stem").
WHITEN_EPS = 1e-2

# Each choice with what switching it off cost (benchmarks/fastcnn_ablations.py, 15 epochs, one
# seed; noise is about +-0.6 points; docs/experiments.md, "Ablations of the bundled recipe").
RECIPE = Recipe(
    "fastcnn",
    "sgd",  # Adam (the tutorial's winner) instead: -1.3 points
    lr=0.05,  # one-cycle peak at batch 128: 0.2 / 0.05 / 0.01 gave 70.3 / 84.9 / 83.3% (10 epochs)
    batch_size=128,  # big enough for BN statistics and oneDNN efficiency, small enough for many steps
    # The epoch's leftover batch (6,297 % 128 = 25 images) would set 10% of BN's running statistics
    # from 25 images, every epoch; the eval-mode network felt it (docs/experiments.md). Skip it: the
    # shuffle puts every image in a full batch in most epochs.
    drop_last=True,
    momentum=0.9,
    nesterov=True,  # plain momentum: -1.5 points, at no cost either way
    # Muon for the conv filters (muon.py): orthogonalised updates at a fixed filter norm, lr 0.05
    # under the same one-cycle schedule (0.03 / 0.05 / 0.1 gave 94.9 / 94.5 / 94.2%: flat). The
    # biggest single gain measured: +3.2 test / +3.4 val points over SGD for every parameter
    # (fastcnn-s-p3, 96 px, 25 epochs, four seeds, each up), for 5-10% more seconds per epoch.
    muon=0.05,
    # (measured before Muon, which keeps the filters at a fixed norm instead: now the head's only)
    weight_decay=5e-4,  # 1e-3: +0.28 test / +0.19 val over six 26-epoch seeds, noise
    decay_norm_bias=False,  # decaying BN scales and biases too: -0.9 points (they set scale, not capacity)
    schedule="onecycle",  # warm-up matters: cosine decay from lr 0.05 without it: -20 points
    warmup=0.2,  # linear warm-up over the first 20% of steps, then linear decay to zero
    label_smoothing=0.1,  # off: -0.7 points (many pet photos are ambiguous crops); 0.2: -0.5 at 26 epochs
    translate=0.0625,  # random shifts of up to 1/16 of the side (4 px at 64), zero-filled; off: -1.4 points
    tta=True,  # average the image and its mirror at evaluation: -1.1 points without (same weights)
    eval_scale=1.125,  # test at 72 px after training at 64: -0.4 points at 64 (same weights); 80 overshoots
    # and average with the image decoded at the training size (+0.4 to +1.5 at 80 px, +0.6 at 64)
    # and at 1.25x it (another +0.3 on average, 64-160 px)
    tta_scales=(1.0, 1.25),
    ema=None,  # an EMA of the weights (decay 0.99) did not pay in runs this short: -0.4 points
    # progressive resizing: 64 -> 96 px 91.6% in 326 s vs 91.1% in 255 s at a fixed 80 px; 48 -> 80 px
    # from caches, 90.66% vs 90.68% (six seeds) at a fixed 64 px for the same cost
    progressive=None,
    description="fastcnn's bundled recipe: one-cycle Muon (filters) + nesterov SGD, label smoothing, flips + shifts, "
                "test-time views",
)


class FastCNN(nn.Module):
    def __init__(self, num_classes: int, stem: int, widths: tuple[int, ...], depth: int, patch: int = 2,
                 whiten: bool = False):
        super().__init__()
        if whiten and stem // 2 > 3 * patch * patch:
            raise ValueError(f"a whitened {patch}x{patch} stem has {3 * patch * patch} directions, not {stem // 2}")
        layers: list[nn.Module] = [nn.Conv2d(3, stem, patch, stride=patch, bias=False), nn.BatchNorm2d(stem),
                                   nn.GELU()]
        # Frozen here, not in train(): a resumed run, a compare lane or a DDP rank building the model
        # keeps the stem out of the optimizer whatever path it takes.
        layers[0].weight.requires_grad_(not whiten)
        cin = stem
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.GELU()]
            for _ in range(depth - 1):
                layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).amax(dim=(2, 3))
        return self.head(x)


@torch.no_grad()
def whiten_stem(model: FastCNN, images) -> None:
    """Set the stem's filters to the principal directions of the training images' stem patches
    (the stem's own kernel and stride), scaled to unit variance, and their negatives.
    `images`: uint8 (N, H, W, 3), a memmap or a tensor (on any device). Deterministic: no random draw."""
    stem = model.features[0]
    k, half = stem.kernel_size[0], stem.out_channels // 2
    picked = np.linspace(0, len(images) - 1, min(len(images), WHITEN_IMAGES)).round().astype(int).tolist()
    d = 3 * k * k
    n, total, outer = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, len(picked), 250):
        x = torch.as_tensor(images[picked[i:i + 250]]).permute(0, 3, 1, 2).float() / 255 - 0.5
        p = x.unfold(2, k, k).unfold(3, k, k).permute(0, 2, 3, 1, 4, 5).reshape(-1, d)
        n, total, outer = n + len(p), total + p.sum(0).double().cpu(), outer + (p.T @ p).double().cpu()
    mean = total / n
    var, vec = torch.linalg.eigh(outer / n - torch.outer(mean, mean))  # ascending
    w = (vec[:, -half:].T / (var[-half:] + WHITEN_EPS).sqrt()[:, None]).reshape(half, 3, k, k)
    stem.weight.copy_(torch.cat([w, -w]).to(stem.weight))


def _register(name: str, v: Variant) -> None:
    sizes = SIZES[v.patch]
    stem = f"{v.patch}x{v.patch} patch stem" + (" (whitened from the data, frozen)" if v.whiten else "")
    desc = (f"from-scratch CNN, {stem}, widths {'/'.join(map(str, v.widths))}, default {v.size} px (takes "
            f"{'/'.join(map(str, sizes))})")

    @register_model(name, input_size=v.size, sizes=sizes, recipe=RECIPE, description=desc, mean=MEAN, std=STD,
                    head="head", family=f"fastcnn {v.stem} {v.widths} {v.depth}", grid=lambda s: (s / v.patch) ** 2,
                    init_from_data=whiten_stem if v.whiten else None)
    def build(num_classes: int) -> nn.Module:
        return FastCNN(num_classes, v.stem, v.widths, v.depth, v.patch, v.whiten)


# The planner's cost model (ModelSpec.grid): a fastcnn's cost grows with the pixels of the grid its
# stages see, (size / patch)^2; measured rates follow 1 / grid within 2-6% (plan.py). Variants
# that differ only in the patch share a `family`.
for _name, _v in VARIANTS.items():
    _register(_name, _v)
