"""Optimizer recipes: the tutorial's four presets, plus any torch.optim recipe from YAML.

Every hyperparameter of a preset lives here, next to the reason for it.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from .errors import ImgclfError

SCHEDULES = ("constant", "cosine", "onecycle")


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
    # points (3 seeds, BENCHMARKS.md), so fastcnn leaves it off.
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
    # runs up, 64-160 px); BENCHMARKS.md. Decoded from the file (train's caches), not resized from the
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
    # (BENCHMARKS.md): no better per second than a fixed size, so off by default.
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


# The tutorial's experiment. All four share the model, the initial weights, the split and the
# epochs; only the update rule (and the batch size it implies) differs, so the ranking isolates
# the optimizer. Learning rates are the conventional safe defaults for each rule on a small CNN
# trained from scratch, not tuned per dataset (compare --tune-lr is the fair way to do that).
PRESETS: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "vanilla-sgd", "sgd", lr=0.001, batch_size=1,
            description="plain SGD, one example per step: noisy updates, so a 10x smaller lr than mini-batch",
        ),
        Recipe(
            "minibatch-sgd", "sgd", lr=0.01, batch_size=32,
            description="plain SGD on batches of 32: averaged gradients allow lr 0.01",
        ),
        Recipe(
            "momentum", "sgd", lr=0.01, batch_size=32, momentum=0.9,
            description="SGD with momentum 0.9 (the standard value), same lr and batch as minibatch-sgd",
        ),
        Recipe(
            "adam", "adam", lr=0.001, batch_size=32, betas=(0.9, 0.999),
            description="Adam with its paper's defaults (lr 1e-3, betas 0.9/0.999)",
        ),
    ]
}
TUTORIAL_PRESETS = ("vanilla-sgd", "minibatch-sgd", "momentum", "adam")


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


# `--optimizer NAME` with a torch.optim class name: batch 32 like the presets; where torch's own
# defaults are not what the tutorial's users expect, the values Keras uses. Others: torch's defaults.
TORCH_DEFAULTS: dict[str, dict] = {
    "sgd": {"lr": 0.01, "momentum": 0.9},  # torch's SGD has no default lr; these are the momentum preset's
    "adamw": {"lr": 1e-3, "weight_decay": 0.01},  # torch's AdamW defaults, stated in the recipe
    "rmsprop": {"lr": 1e-3},  # Keras's default; torch's is 10x that, far above Adam's step size
}
_NO_CLOSURE_FREE_STEP = {"lbfgs": "it needs a closure that re-evaluates the loss", "sparseadam": "it needs sparse gradients"}


def bundled_recipes() -> dict[str, Recipe]:
    """The four presets, then each model's bundled recipe (fastcnn's), by name."""
    from .models import get_spec, list_models

    return {**PRESETS, **{s.recipe.name: s.recipe for s in map(get_spec, list_models()) if s.recipe}}


def get_recipe(name: str) -> Recipe:
    """A preset, a recipe bundled with a model (`fastcnn`), or any torch.optim class by name
    (sgd, adamw, rmsprop, nadam, ...) with TORCH_DEFAULTS or torch's own defaults."""
    known = bundled_recipes()
    if name in known:
        return known[name]
    low = name.lower()
    if low in _NO_CLOSURE_FREE_STEP:
        raise ImgclfError(f"--optimizer {name}: not supported, {_NO_CLOSURE_FREE_STEP[low]}")
    try:
        cls = optimizer_class(low)
    except ImgclfError:
        raise ImgclfError(f"--optimizer '{name}' is neither a recipe ({', '.join(known)}) nor a torch.optim class; "
                          "define it in a --recipes YAML file") from None
    settings = TORCH_DEFAULTS.get(low) or {"lr": _default_lr(cls)}
    return Recipe(low, low, batch_size=32, description=f"torch.optim.{cls.__name__}: "
                  + ", ".join(f"{k} {v:g}" for k, v in settings.items()), **settings).validate()


def _default_lr(cls) -> float:
    lr = inspect.signature(cls.__init__).parameters.get("lr")
    default = getattr(lr, "default", inspect.Parameter.empty)
    return float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else 1e-3


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """Apply command-line overrides (None means 'not given')."""
    return replace(recipe, **{k: v for k, v in overrides.items() if v is not None}).validate()


def load_recipes(path: Path | str) -> list[Recipe]:
    """Recipes from YAML: a list (or {recipes: [...]}) of mappings with Recipe's fields.

    Example:
        - name: adamw-wd
          optimizer: adamw
          lr: 0.001
          weight_decay: 0.05
          batch_size: 64
    A mapping may also name a preset with `preset: adam` and override some fields.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImgclfError(f"recipes file {path} not found") from None
    except yaml.YAMLError as e:
        raise ImgclfError(f"recipes file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    items = doc.get("recipes") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ImgclfError(f"recipes file {path} must hold a non-empty list of recipes")
    known = {f.name for f in fields(Recipe)}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ImgclfError(f"{path}: recipe #{i + 1} must be a mapping, got {type(item).__name__}")
        item = dict(item)
        base = item.pop("preset", None)
        unknown = set(item) - known
        if unknown:
            raise ImgclfError(f"{path}: recipe #{i + 1} has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        item = _tuples(item)
        try:
            r = replace(get_recipe(base), **item) if base else Recipe(**item)
        except TypeError as e:
            raise ImgclfError(f"{path}: recipe #{i + 1}: {e}") from None
        out.append(r.validate())
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ImgclfError(f"{path}: recipe names must be unique, got {names}")
    return out


def recipe_from_dict(d: dict) -> Recipe:
    """A recipe as saved in a run's config.json (runs from before `tta_scales` say `tta_train_size`)."""
    d = _tuples(d)
    if d.pop("tta_train_size", False):
        d["tta_scales"] = (1.0,)
    return Recipe(**d)


def _tuples(d: dict) -> dict:
    """YAML and JSON give lists; the frozen Recipe keeps tuples."""
    return {k: tuple(v) if k in ("betas", "tta_scales") and isinstance(v, list) else v for k, v in d.items()}
