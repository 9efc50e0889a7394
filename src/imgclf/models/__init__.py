"""Model registry: `create_model(name, num_classes)`.

Each architecture is one file in this package that decorates its builder with
`@register_model`; every module here is imported below, so adding a model is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch.nn as nn

from ..errors import ImgclfError

if TYPE_CHECKING:
    from ..recipes import Recipe


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

    def meta(self, size: int | None = None) -> dict:
        return {"model": self.name, "input_size": size or self.input_size, "mean": list(self.mean),
                "std": list(self.std)}

    def check_size(self, size: int | None) -> int:
        """The input size to train at: the model's default, or one it accepts."""
        if size is None or size == self.input_size:
            return self.input_size
        if size not in self.sizes:
            ok = "/".join(map(str, self.sizes)) if self.sizes else f"only {self.input_size}"
            raise ImgclfError(f"--size {size} does not suit {self.name}: it takes {ok} px")
        return size


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, input_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), description: str = "",
                   sizes: tuple[int, ...] = (), recipe: "Recipe | None" = None):
    def deco(fn: Callable[[int], nn.Module]):
        if name in _MODELS:
            raise RuntimeError(f"model {name} registered twice")
        _MODELS[name] = ModelSpec(name, fn, input_size, tuple(mean), tuple(std), description, tuple(sizes), recipe)
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
