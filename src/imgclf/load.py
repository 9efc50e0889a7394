"""Stage 3: batches from the decoded cache, augmented on the batch tensor, never per image.

This is the one module that feeds pixels to training and evaluation: it reads uint8 NHWC rows
from the memory-mapped cache, so an epoch costs a memcpy per batch rather than a JPEG decode
per image, and memory stays at a chunk's worth whatever the dataset's size.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .cache import CachedSplit

_CHUNK_BYTES = 32 << 20  # rows read from the memmap at a time: amortises batch-size-1 loops


@dataclass(frozen=True)
class Augment:
    hflip: bool = True  # the tutorial's: cats and dogs look the same mirrored
    vflip: bool = False  # optional: upside-down pets are rare, so off by default

    @property
    def active(self) -> bool:
        return self.hflip or self.vflip


def batches(
    split: CachedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 NHWC images, int64 labels) batches, in a seeded random or the stored order."""
    n = len(split)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    row_bytes = int(np.prod(split.images.shape[1:]))
    chunk = max(batch_size, (_CHUNK_BYTES // row_bytes) // batch_size * batch_size)
    end = n - n % batch_size if drop_last else n
    for c0 in range(0, end, chunk):
        idx = order[c0 : min(c0 + chunk, end)]
        # Fancy-indexing the memmap copies just these rows; sorted reads are kinder to the disk.
        srt = np.argsort(idx, kind="stable")
        imgs = np.empty((len(idx), *split.images.shape[1:]), dtype=np.uint8)
        imgs[srt] = split.images[idx[srt]]
        _release(split.images)
        x = torch.from_numpy(imgs)
        y = torch.from_numpy(split.labels[idx])
        for b0 in range(0, len(idx), batch_size):
            yield x[b0 : b0 + batch_size], y[b0 : b0 + batch_size]


def _release(images: np.ndarray) -> None:
    """Drop the memmap's pages from this process's resident set once a chunk is copied out.

    The kernel keeps them in its page cache (re-reads stay fast), but they stop counting as our
    RSS, so peak memory stays at a chunk's worth however large the dataset is.
    """
    mm = getattr(images, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def augment(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random flips on a uint8 NHWC batch: one vectorised select per flip, no Python per image."""
    b = x.shape[0]
    if aug.hflip:
        m = torch.rand(b, generator=generator) < 0.5
        x = torch.where(m.view(b, 1, 1, 1), x.flip(2), x)
    if aug.vflip:
        m = torch.rand(b, generator=generator) < 0.5
        x = torch.where(m.view(b, 1, 1, 1), x.flip(1), x)
    return x


def input_fn(
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return f(uint8 NHWC batch) -> normalised float NCHW on `device`.

    The constants are built once, not per step (batch-size-1 SGD takes ~10k steps an epoch).
    Copy as uint8 (4x fewer bytes than float) and convert on the device. Permuting NHWC to
    NCHW gives channels_last strides for free; NCHW-contiguous costs one copy when asked for.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (x * scale + shift).contiguous(memory_format=fmt)  # (x/255 - mean)/std, one pass

    return f
