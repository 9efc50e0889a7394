"""Stage 3: batches from the decoded cache, augmented on the batch tensor, never per image.

This is the one module that feeds pixels to training and evaluation: it reads uint8 NHWC rows
from the memory-mapped cache, so an epoch costs a memcpy per batch rather than a JPEG decode
per image, and memory stays at a chunk's worth whatever the dataset's size.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .cache import CachedSplit

_CHUNK_BYTES = 32 << 20  # rows read from the memmap at a time: amortises batch-size-1 loops
_PIXELS_PER_ROW = 16  # input_fn's flat view: 48 floats a row, what AVX-512 takes in 3 vectors


@dataclass(frozen=True)
class Augment:
    hflip: bool = True  # the tutorial's: cats and dogs look the same mirrored
    vflip: bool = False  # optional: upside-down pets are rare, so off by default
    translate: float = 0.0  # random shifts of up to this fraction of the side, zero-filled

    @property
    def active(self) -> bool:
        return self.hflip or self.vflip or self.translate > 0


def batches(
    split: CachedSplit,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    pin: bool = False,
    with_index: bool = False,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (uint8 NHWC images, int64 labels) batches, in a seeded random or the stored order (or
    `order`, row indices); with `with_index`, (images, labels, the rows' indices in the split as a
    CPU tensor).

    The order always comes from the CPU generator, so it is the same on every device. A split
    held on the GPU (see `resident`) is gathered there; a memmapped one is read a chunk at a
    time, into pinned memory when `pin` (so the host-to-GPU copy can overlap compute).
    """
    if order is None:  # else: the caller's order (rows may repeat: the balanced sampler)
        order = torch.randperm(len(split), generator=generator) if shuffle else torch.arange(len(split))
    n = len(order)
    cpu_order = order  # the indices that `with_index` yields, on the CPU whatever the device
    row_bytes = int(np.prod(split.images.shape[1:])) * split.images.dtype.itemsize
    chunk = max(batch_size, (_CHUNK_BYTES // row_bytes) // batch_size * batch_size)
    end = n - n % batch_size if drop_last else n
    on_device = isinstance(split.images, torch.Tensor)
    if on_device:
        order = order.to(split.images.device)
        labels = torch.from_numpy(split.labels).to(split.images.device)
    for c0 in range(0, end, chunk):
        if on_device:
            idx = order[c0 : min(c0 + chunk, end)]
            x, y = split.images[idx], labels[idx]
        else:
            idx = order[c0 : min(c0 + chunk, end)].numpy()
            # Fancy-indexing the memmap copies just these rows; sorted reads are kinder to the disk.
            srt = np.argsort(idx, kind="stable")
            imgs = np.empty((len(idx), *split.images.shape[1:]), dtype=split.images.dtype)
            imgs[srt] = split.images[idx[srt]]
            _release(split.images)
            x = torch.from_numpy(imgs)
            x = x.pin_memory() if pin else x
            y = torch.from_numpy(split.labels[idx])
        rows = cpu_order[c0 : min(c0 + chunk, end)]
        for b0 in range(0, len(idx), batch_size):
            batch = x[b0 : b0 + batch_size], y[b0 : b0 + batch_size]
            yield (*batch, rows[b0 : b0 + batch_size]) if with_index else batch


def resident(split: CachedSplit, device: torch.device, fraction: float = 0.5) -> CachedSplit:
    """On a GPU, hold the whole split in device memory when it takes under `fraction` of what is
    free: batches are then gathered on the device and no image crosses PCIe after the first time."""
    if device.type != "cuda" or isinstance(split.images, torch.Tensor):
        return split
    free, _ = torch.cuda.mem_get_info(device)
    if split.images.nbytes > fraction * free:
        return split
    images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
    _release(split.images)
    return CachedSplit(images=images, labels=split.labels, paths=split.paths)


def _release(images: np.ndarray) -> None:
    """Drop the memmap's pages from this process's resident set once a chunk is copied out.

    The kernel keeps them in its page cache (re-reads stay fast), but they stop counting as our
    RSS, so peak memory stays at a chunk's worth however large the dataset is.
    """
    mm = getattr(images, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def augment(x: torch.Tensor, aug: Augment, generator: torch.Generator,
            hflips: torch.Tensor | None = None) -> torch.Tensor:
    """Random flips and shifts on a uint8 NHWC batch: vectorised over the batch, no Python per image.
    `hflips`: which images to mirror (bool, one per image), instead of a coin per image."""
    b = x.shape[0]
    if aug.hflip:  # the coin flips come from the CPU generator: the same on every device
        x = _flip_some(x, 2, torch.rand(b, generator=generator) < 0.5 if hflips is None else hflips)
    if aug.vflip:
        x = _flip_some(x, 1, torch.rand(b, generator=generator) < 0.5)
    p = round(aug.translate * x.shape[1])
    if p > 0:
        x = _shift(x, p, generator)
    return x


def _flip_some(x: torch.Tensor, dim: int, which: torch.Tensor) -> torch.Tensor:
    """The NHWC batch with images `which` (bools) mirrored along `dim` (1: rows, 2: columns).
    On a CPU only those images are flipped and the batch restacked as whole blocks: `torch.where`
    with a per-image mask ran element by element on uint8, 2.4 ms for 32 images at 224 px against
    ~0.5 ms (BENCHMARKS.md, "The input side of a step"), the same pixels."""
    if x.device.type != "cpu":  # on a GPU one kernel beats a Python loop over the batch
        return torch.where(which.to(x.device).view(-1, 1, 1, 1), x.flip(dim), x)
    return torch.stack([img.flip(dim - 1) if w else img for img, w in zip(x, which.tolist())])


def _shift(x: torch.Tensor, p: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-p, p]: pad p zeros around, then take one window
    per image (airbench's random crop, on the whole batch). `unfold` makes every window a view, so
    a single advanced index copies the b chosen ones as blocks: 0.6 ms for 128 images at 64 px,
    against 3.3 ms gathering them pixel by pixel through row and column index grids."""
    b, h, w, _ = x.shape
    dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(x, (0, 0, p, p, p, p))
    windows = padded.unfold(1, h, 1).unfold(2, w, 1)  # (b, 2p+1, 2p+1, C, h, w), all views
    return windows[torch.arange(b, device=x.device), dy, dx].permute(0, 2, 3, 1).contiguous()


def epoch_size(size: int, epoch: int, epochs: int, start: float | None) -> int:
    """Training size for a 1-based epoch under progressive resizing (Recipe.progressive): `start` x
    size for the first half of the epochs, then linearly up to `size` by 85% of them, in steps of 8
    px (oneDNN's and tensor cores' favourite multiples). None: always `size`."""
    if start is None:
        return size
    ramp = min(1.0, max(0.0, ((epoch - 1) / epochs - 0.5) / 0.35))
    return min(size, max(16, round(size * (start + ramp * (1 - start)) / 8) * 8))


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A normalised float NCHW batch resized to size x size (antialiased bilinear on the batch,
    keeping its memory format)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.contiguous(memory_format=fmt)


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
    The arithmetic runs on the NHWC memory viewed as rows of 16 pixels (48 values), each column
    with its channel's constants: with the channel as a 3-wide innermost dimension the CPU
    kernels did not vectorise, 4.9 ms for 32 images at 224 px against 0.6 ms, the same floats.
    """
    scale = torch.tensor([1.0 / (255.0 * s) for s in std] * _PIXELS_PER_ROW, device=device)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)] * _PIXELS_PER_ROW, device=device)

    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).contiguous()
        k = 3 * math.gcd(x.numel() // 3, _PIXELS_PER_ROW)  # values per row: whole pixels, dividing the batch
        y = x.view(-1, k).float()
        y.mul_(scale[:k]).add_(shift[:k])  # (x/255 - mean)/std: two in-place passes, no temporaries
        y = y.view(x.shape).permute(0, 3, 1, 2)  # NCHW with channels_last strides
        return y if channels_last else y.contiguous()

    return f
