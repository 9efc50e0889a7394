"""`show`: a grid of random images from a split, titled with their class (the tutorial's
visualize_batch); with augmented=True, exactly as the training loader feeds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cache import open_cache
from .decode import read_and_decode
from .errors import ImgclfError
from .load import Augment, augment
from .manifest import load_dataset
from .models import get_spec
from .plots import plot_grid


def show(data: Path | str, out: Path | str = "batch.png", split: str = "train", n: int = 16, seed: int = 0,
         augmented: bool = False, model: str = "seed-cnn", vflip: bool = False) -> Path:
    if not 1 <= n <= 256:
        raise ImgclfError(f"--n must be between 1 and 256, got {n}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ImgclfError(f"--out {out} must end in .png")
    ds = load_dataset(data)
    rows = ds.split_rows(split)
    if not rows:
        raise ImgclfError(f"split '{split}' of {data} is empty")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)  # random order, classes mixed
    titles = [rows[i]["class"] for i in pick]
    if augmented:
        spec = get_spec(model)
        translate = spec.recipe.translate if spec.recipe else 0.0  # the model's bundled shifts, if any
        cached = open_cache(ds, spec.input_size)[split]
        x = torch.from_numpy(np.stack([cached.images[i] for i in pick]))
        x = augment(x, Augment(hflip=True, vflip=vflip, translate=translate), torch.Generator().manual_seed(seed))
        images = list(x.numpy())
        what = "flips" + (f", shifts up to {translate:.1%}" if translate else "")
        title = f"{split}: {len(pick)} images as the training loader feeds them ({spec.input_size}px, {what})"
    else:
        images = [read_and_decode(rows[i]["path"]) for i in pick]
        title = f"{split}: {len(pick)} random images"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_grid(images, titles, out, title)
    return out
