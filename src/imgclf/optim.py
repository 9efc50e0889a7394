"""A training recipe (the `Recipe` type) and how it becomes an optimizer and a learning-rate schedule.

Named recipes (the tutorial's presets, YAML files, torch.optim names) live in recipes.py; a
model's own recipe lives with the model (models/fastcnn.py). This module knows neither, so both
can use it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch

from .errors import ImgclfError


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str  # a torch.optim class name, case-insensitive: sgd, adam, adamw, rmsprop, ...
    lr: float
    batch_size: int = 32
    epochs: int | None = None  # None: the command's --epochs
    momentum: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float = 0.0
    decay_norm_bias: bool = True  # False: weight decay on conv/linear weights only, not BN or biases
    schedule: str = "constant"
    warmup: float = 0.2  # onecycle: fraction of the steps spent warming up
    label_smoothing: float = 0.0
    drop_last: bool = False  # skip each epoch's last, smaller batch (its BN statistics are noisy)
    translate: float = 0.0  # random shifts of up to this fraction of the side (augmentation)
    # Random horizontal flips in training, and the mirror view at test time (tta). Off for data
    # whose mirror image is another thing: digits, letters, road signs with arrows.
    hflip: bool = True
    # Mirror each image on alternate epochs (airbench) instead of by a coin each time: a coin per
    # image picks its first epoch's side, then it switches every epoch, so no image goes several
    # epochs seen from one side only. Over the 5-minute plan's 26 epochs it measured -0.37 test
    # points (3 seeds, docs/experiments.md), so fastcnn leaves it off.
    alternate_flips: bool = False
    tta: bool = False  # evaluate on the image and its mirror, averaging the probabilities
    # Evaluate at this multiple of the training size (models that take any size). Random shifts and
    # zero borders make objects look smaller in training than in a clean test image; a slightly
    # larger test image compensates (Touvron et al. 2019, "Fixing the train-test resolution discrepancy").
    eval_scale: float = 1.0
    # Further test-time views: each evaluated image also decoded at these multiples of the training
    # size (models that take any size), every view's probabilities averaged. Sizes around eval_scale
    # err on different images, so the views are a small ensemble from one set of weights, for one
    # more evaluation pass each. fastcnn's (1.0, 1.25), with eval_scale 1.125: 1.0 gained +0.4 to
    # +1.5 test points at 80 px and +0.4 to +0.8 at 64 px, 1.25 another +0.3 on average (9 of 10
    # runs up, 64-160 px); docs/experiments.md. Decoded from the file (train's caches), not resized from the
    # evaluation batch: at 64 px that second resample blurs what counts and keeps +0.1 of 1.0's gain.
    tta_scales: tuple[float, ...] = ()
    ema: float | None = None  # evaluate an exponential moving average of the weights with this decay
    # Muon for the convolution filters (muon.py), at this peak lr, under the same schedule; the
    # other parameters keep the recipe's SGD settings. None: the optimizer alone. SGD only.
    muon: float | None = None
    # Progressive resizing (fastai, FFCV): train the first half of the epochs at this fraction of the
    # size, then grow linearly to the full size by 85% of the epochs. Early epochs learn coarse
    # shapes just as well from small images, and the cost of a step grows with the square of the side.
    # Each size is read from a decoded cache of its own (train.py). Measured on fastcnn-s
    # (docs/experiments.md): no better per second than a fixed size, so off by default.
    progressive: float | None = None
    description: str = ""

    def validate(self) -> "Recipe":
        where = f"recipe '{self.name}'"
        if not self.name or any(ch in self.name for ch in "/\\ "):
            raise ImgclfError(f"recipe name '{self.name}' must be non-empty with no spaces or slashes")
        optimizer_class(self.optimizer, where)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise ImgclfError(f"{where}: lr must be a positive number, got {self.lr}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ImgclfError(f"{where}: batch_size must be an integer >= 1, got {self.batch_size}")
        if self.epochs is not None and not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ImgclfError(f"{where}: epochs must be an integer >= 1, got {self.epochs}")
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ImgclfError(f"{where}: momentum must be in [0, 1), got {self.momentum}")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise ImgclfError(f"{where}: betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise ImgclfError(f"{where}: weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ImgclfError(f"{where}: schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'")
        for key, lo, hi in (("warmup", 0.0, 1.0), ("label_smoothing", 0.0, 1.0), ("translate", 0.0, 0.5)):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and lo <= v < hi):
                raise ImgclfError(f"{where}: {key} must be in [{lo:g}, {hi:g}), got {v}")
        if not (isinstance(self.eval_scale, (int, float)) and 0.5 <= self.eval_scale <= 2):
            raise ImgclfError(f"{where}: eval_scale must be in [0.5, 2], got {self.eval_scale}")
        scales = self.tta_scales
        if not (isinstance(scales, tuple) and all(isinstance(k, (int, float)) and 0.5 <= k <= 2 for k in scales)):
            raise ImgclfError(f"{where}: tta_scales must be a list of multiples of the training size in [0.5, 2], "
                              f"such as [1.0, 1.25]; got {scales}")
        if self.progressive is not None and not 0.25 <= self.progressive < 1:
            raise ImgclfError(f"{where}: progressive must be a start fraction of the size in [0.25, 1), "
                              f"got {self.progressive}")
        if self.muon is not None and not (isinstance(self.muon, (int, float)) and 0 < self.muon < 1):
            raise ImgclfError(f"{where}: muon must be the filters' lr in (0, 1) such as 0.05, got {self.muon}")
        if self.muon is not None and self.optimizer.lower() != "sgd":
            raise ImgclfError(f"{where}: muon goes with optimizer sgd (it runs the other parameters' SGD steps), "
                              f"got '{self.optimizer}'; set muon: null to use {self.optimizer} for every parameter")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ImgclfError(f"{where}: ema must be a decay in (0, 1) such as 0.99, got {self.ema}")
        return self

    @property
    def test_mirror(self) -> bool:
        """Average each test image with its mirror: asked for (tta) and true to the data (hflip)."""
        return self.tta and self.hflip

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas) if self.betas else None
        d["tta_scales"] = list(self.tta_scales)
        return d


def eval_sizes(recipe: Recipe, size: int, any_size: bool = True) -> tuple[int, list[int]]:
    """(The evaluation size, the further sizes each evaluated image is decoded at) after training at
    `size`; a model with a fixed input size (`any_size` False) is evaluated at that size alone."""
    if not any_size:
        return size, []
    eval_size = round(size * recipe.eval_scale)
    more = dict.fromkeys(round(size * k) for k in recipe.tta_scales)  # ordered, no repeats
    return eval_size, [s for s in more if s != eval_size]


def optimizer_class(name: str, where: str = "optimizer") -> type[torch.optim.Optimizer]:
    by_lower = {
        k.lower(): v
        for k, v in vars(torch.optim).items()
        if inspect.isclass(v) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer
    }
    try:
        return by_lower[name.lower()]
    except KeyError:
        raise ImgclfError(f"{where}: unknown optimizer '{name}'; torch.optim has {', '.join(sorted(by_lower))}") from None


def param_groups(recipe: Recipe, model: torch.nn.Module) -> list[dict]:
    """One group, or two when weight decay skips BN parameters and biases (all 1-d tensors).

    Decaying a BN scale only shrinks the next layer's input, which the following BN undoes, so
    it fights the optimizer for nothing; biases are too few to overfit with."""
    params = [p for p in model.parameters() if p.requires_grad]
    muon = []  # last, so that group 0 (whose lr the history records) runs at the recipe's lr
    filters = [p for p in params if p.ndim == 4] if recipe.muon else []
    if filters:  # conv filters to Muon, at their own lr (MuonSGD keeps their norm fixed, never decays them)
        muon = [{"params": filters, "lr": recipe.muon, "muon": True}]
        params = [p for p in params if p.ndim != 4]
    if recipe.decay_norm_bias or recipe.weight_decay == 0:
        return [{"params": params}] + muon
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}] + muon


def build_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """Instantiate the recipe's torch.optim class with just the arguments it sets."""
    if recipe.muon:
        from .muon import MuonSGD

        return MuonSGD(params, recipe.lr, recipe.momentum or 0.0, bool(recipe.nesterov), recipe.weight_decay)
    cls = optimizer_class(recipe.optimizer, f"recipe '{recipe.name}'")
    kwargs = {"lr": recipe.lr, "weight_decay": recipe.weight_decay}
    if recipe.momentum is not None:
        kwargs["momentum"] = recipe.momentum
    if recipe.nesterov is not None:
        kwargs["nesterov"] = recipe.nesterov
    if recipe.betas is not None:
        kwargs["betas"] = tuple(recipe.betas)
    accepted = inspect.signature(cls.__init__).parameters
    bad = [k for k in kwargs if k not in accepted and not (k == "weight_decay" and kwargs[k] == 0)]
    if bad:
        raise ImgclfError(f"recipe '{recipe.name}': {cls.__name__} takes no {', '.join(bad)}")
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    try:
        return cls(params, **kwargs)
    except (ValueError, TypeError) as e:
        raise ImgclfError(f"recipe '{recipe.name}': {cls.__name__} rejected its settings: {e}") from None


# --- learning-rate schedules: name -> f(total steps, warm-up fraction) -> per-step lr multiplier ---


def constant_lr(total_steps: int, warmup: float):
    """The tutorial's: the recipe's lr throughout."""
    return lambda s: 1.0


def cosine_lr(total_steps: int, warmup: float):
    """Cosine decay from the recipe's lr to zero, no warm-up."""
    return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))


def onecycle_lr(total_steps: int, warmup: float):
    """Linear warm-up over `warmup` of the steps, then linear decay to zero (fastcnn's). A run of
    one step is all warm-up (the decay's denominator is kept above zero)."""
    warm = max(1, int(warmup * total_steps))
    return lambda s: (s + 1) / warm if s < warm else max(0.0, (total_steps - s) / max(1, total_steps - warm))


SCHEDULES = {"constant": constant_lr, "cosine": cosine_lr, "onecycle": onecycle_lr}


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: "Recipe", total_steps: int):
    """The recipe's schedule as a LambdaLR stepped once per optimizer step."""
    if recipe.schedule not in SCHEDULES:
        raise ImgclfError(f"recipe '{recipe.name}': schedule must be one of {', '.join(SCHEDULES)}, "
                          f"got '{recipe.schedule}'")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[recipe.schedule](total_steps, recipe.warmup))
