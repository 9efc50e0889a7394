"""Model registry: `create_model(name, num_classes)`, and each model's `ModelSpec`.

Each architecture is one file in this package that decorates its builder with
`@register_model`; every module here is imported below, so adding a model is adding a file.
Everything the rest of imgclf knows about a model comes from its spec: input sizes and
normalisation, its classifier head, its bundled recipe, where its pretrained weights come from,
and the cost figures the planner estimates with. No other module tests a model's name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch.nn as nn

from ..errors import ImgclfError

if TYPE_CHECKING:
    from ..optim import Recipe


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int], nn.Module]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str = ""
    sizes: tuple[int, ...] = ()  # other input sizes it accepts (global pooling); () = input_size only
    recipe: "Recipe | None" = None  # the training recipe bundled with the model, if any
    head: str = "head"  # the classifier layer (a submodule path): new per dataset, all a probe trains
    # () -> (path of ImageNet weights from an installed package, the sha256 prefix it must have),
    # or for a model made of several pretrained parts [(their key prefix, path, sha256 prefix)], or
    # an ImgclfError saying what to install; None: no bundled weights (--pretrained-path still
    # works). Models with weights expose `features(x)`, the pooled embedding their head sees (what
    # --mode probe caches).
    weights: Callable[[], tuple[Path, str] | list[tuple[str, Path, str]]] | None = None
    fold: Callable[[nn.Module], nn.Module] | None = None  # an inference-only copy, e.g. BN folded into convs
    # The planner's cost model: models of one `family` differ only in their stem, so their training
    # rate scales as 1 / grid(size), the pixels their stages see (plan.py estimates one from another).
    family: str = ""
    grid: Callable[[int], float] | None = None
    # A model made of separately trained models (ensemble.py): (its submodule, the registered
    # model it holds, how that one trains: "probe" or "finetune"), trained in this order.
    parts: tuple[tuple[str, str, str], ...] = ()
    # A data-dependent init, `f(model, train_images)` with the training split's uint8 (N, H, W, 3)
    # images at the training size (a memmap, or a tensor on the device): train() calls it after the
    # random init and before the optimizer is built. It draws no random numbers, so runs that differ
    # only in it share their initial weights and data order. None: the random init is all.
    init_from_data: Callable[[nn.Module, object], None] | None = None

    def meta(self, size: int | None = None) -> dict:
        return {"model": self.name, "input_size": size or self.input_size, "mean": list(self.mean),
                "std": list(self.std)}

    def head_of(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.head)

    def check_size(self, size: int | None) -> int:
        """The input size to train at: the model's default, or one it accepts."""
        if size is None or size == self.input_size:
            return self.input_size
        if size not in self.sizes:
            ok = "/".join(map(str, self.sizes)) if self.sizes else f"only {self.input_size}"
            raise ImgclfError(f"--size {size} does not suit {self.name}: it takes {ok} px")
        return size


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, input_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **spec):
    """Decorate a builder `f(num_classes) -> nn.Module`; `spec`: ModelSpec's other fields."""
    def deco(fn: Callable[[int], nn.Module]):
        if name in _MODELS:
            raise RuntimeError(f"model {name} registered twice")
        _MODELS[name] = ModelSpec(name, fn, input_size, tuple(mean), tuple(std), **spec)
        return fn

    return deco


def get_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ImgclfError(f"--model '{name}' is unknown; available: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int) -> nn.Module:
    if num_classes < 2:
        raise ImgclfError(f"a classifier needs at least 2 classes, got {num_classes}")
    return get_spec(name).build(num_classes)


def list_models() -> list[str]:
    return sorted(_MODELS)


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
