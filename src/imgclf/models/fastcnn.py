"""`fastcnn-s/m/l`: small from-scratch CNNs built for accuracy per second on a CPU (and fast on a GPU).

In the spirit of Keller Jordan's airbench (CIFAR-10 speedruns), resized for photos of pets:

    stem    Conv 2x2 stride 2 (patchify) -> BN -> GELU     halves the image for almost no compute
    stage   MaxPool 2 -> [Conv 3x3 -> BN -> GELU] x depth   x 3-4 stages, widths grow as size shrinks
    head    global max pool -> Linear (no bias), logits scaled by 1/8

Why each piece (the measurements are in BENCHMARKS.md, "fastcnn ablations"):
- Patchify stem: a 2x2/2 conv sees every pixel once; a 3x3 conv at full resolution would cost
  ~2x the whole rest of the network at 128 px.
- Pool *before* the stage's first conv (airbench pools after it): the 3x3 convs then run at
  a quarter of the pixels. On this 2-core CPU that is 1.5x the images per second; see the ablation.
- BatchNorm after every conv, conv without bias (BN's shift makes the bias redundant).
- GELU: as accurate as ReLU here and smooth, which suits the short, high-lr schedules below.
- Global *max* pool: "is there a cat ear anywhere" beats averaging over background in short runs.
- Logit scale 1/8: keeps the first steps' softmax from saturating under a high learning rate.
- Input size is free (global pooling); the registry's size is the default, `--size` picks another.

The bundled recipe (RECIPE, below) is what `imgclf train DATA` uses when no optimizer is named.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..recipes import Recipe
from . import register_model

# One place for every hyperparameter of the family and its recipe.
VARIANTS = {
    # name: (stem width, stage widths, convs per stage, default input size)
    "fastcnn-s": (32, (64, 128, 256), 2, 64),
    "fastcnn-m": (32, (64, 128, 256, 384), 2, 96),
    "fastcnn-l": (48, (96, 192, 384, 512), 2, 128),
}
SIZES = (64, 96, 128, 160)  # the input sizes the family is tuned and benchmarked at
LOGIT_SCALE = 1 / 8

RECIPE = Recipe(
    "fastcnn",
    "sgd",
    lr=0.05,  # peak of the one-cycle schedule at batch 128 (log-grid search in the ablations)
    batch_size=128,  # big enough for BN statistics and oneDNN efficiency, small enough for many steps
    momentum=0.9,
    nesterov=True,  # slightly better than plain momentum at the same lr, at no cost
    weight_decay=5e-4,  # on conv/linear weights only (decay_norm_bias=False): BN scales must stay free
    decay_norm_bias=False,
    schedule="onecycle",  # linear warm-up over 20% of steps, then linear decay to zero
    label_smoothing=0.1,  # pets are often ambiguous crops: don't let the net chase 100% confidence
    translate=0.0625,  # random shifts of up to 1/16 of the side (4 px at 64), zero-filled
    tta=True,  # average the prediction of the image and its mirror: free accuracy at test time
    description="fastcnn's bundled recipe: one-cycle nesterov SGD, label smoothing, flips + shifts, flip TTA",
)


class FastCNN(nn.Module):
    def __init__(self, num_classes: int, stem: int, widths: tuple[int, ...], depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 2, stride=2, bias=False), nn.BatchNorm2d(stem), nn.GELU()]
        cin = stem
        for w in widths:
            layers.append(nn.MaxPool2d(2))
            for i in range(depth):
                layers += [nn.Conv2d(cin if i == 0 else w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).amax(dim=(2, 3))
        return self.head(x) * LOGIT_SCALE


def _register(name: str, stem: int, widths: tuple[int, ...], depth: int, size: int) -> None:
    desc = f"from-scratch CNN, widths {'/'.join(map(str, widths))}, default {size} px (sizes {'/'.join(map(str, SIZES))})"

    @register_model(name, input_size=size, sizes=SIZES, recipe=RECIPE, description=desc)
    def build(num_classes: int) -> nn.Module:
        return FastCNN(num_classes, stem, widths, depth)


for _name, (_stem, _widths, _depth, _size) in VARIANTS.items():
    _register(_name, _stem, _widths, _depth, _size)
