"""Named recipes: the tutorial's four presets, each model's bundled recipe, torch.optim names, YAML.

Every hyperparameter of a preset lives here, next to the reason for it. The `Recipe` type and
how a recipe becomes an optimizer are in optim.py.
"""

from __future__ import annotations

import inspect
from dataclasses import fields, replace
from pathlib import Path

from .errors import ImgclfError
from .models import get_spec, list_models
from .optim import Recipe, optimizer_class

__all__ = ["PRESETS", "TUTORIAL_PRESETS", "Recipe", "bundled_recipes", "get_recipe", "load_recipes",
           "recipe_from_dict", "with_overrides"]

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
