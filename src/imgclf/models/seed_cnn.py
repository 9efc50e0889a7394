"""`seed-cnn`: the tutorial's small CNN, with its bugs fixed.

Three blocks of [Conv 3x3 stride 2, MaxPool 2, ReLU] (32/64/128 channels) shrink 224 px to
3x3, hence Linear(3*3*128 -> 10). Fixes: raw logits out (CrossEntropyLoss applies the
softmax; the tutorial's extra sigmoid squashed gradients), and input 224 px, the only size
the 3*3*128 flatten fits.
"""

import torch.nn as nn

from . import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True))


@register_model("seed-cnn", input_size=224, head="7", description="the tutorial's 3-block CNN (224 px), bugs fixed")
def seed_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        _block(3, 32),  # 224 -> 112 -> 56
        _block(32, 64),  # 56 -> 28 -> 14
        _block(64, 128),  # 14 -> 7 -> 3
        nn.Flatten(),
        nn.Linear(3 * 3 * 128, 10),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(10, num_classes),
    )
