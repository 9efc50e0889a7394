"""Stage 2: decode every image of a manifest once, resized, into uint8 arrays on disk.

Layout: DATA/cache/<size>px-<key>/{train,val,test}-{images,labels}.npy + meta.json, where
<key> hashes the manifest's bytes, the size, the resize method and the format version, so a
changed manifest or decode recipe can never reuse a stale cache. Arrays are NHWC uint8, read
back memory-mapped: training never loads a split into RAM, whatever the dataset's size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .decode import RESIZE_METHOD, decode_scaled, read_file, resize_into, timeout_handler
from .errors import DecodeError, ImgclfError
from .files import read_json, write_json
from .manifest import Dataset
from .progress import WORKER_MODULES, default_workers, pmap
from .split import SPLITS

CACHE_FORMAT = 1
_CHUNK = 64  # images per worker task: big enough to amortise IPC, small enough to balance
_MAX_HELD = 32 << 20  # decoded bytes a worker holds before resizing them (big originals)


@dataclass
class CachedSplit:
    images: np.ndarray  # (N, size, size, 3) uint8, memory-mapped (a torch tensor once on a GPU)
    labels: np.ndarray  # (N,) int64
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def cache_key(ds: Dataset, size: int) -> str:
    h = hashlib.sha256(f"{ds.manifest_sha256}|{size}|{RESIZE_METHOD}|{CACHE_FORMAT}".encode())
    return h.hexdigest()[:16]


def cache_dir(ds: Dataset, size: int) -> Path:
    return ds.root / "cache" / f"{size}px-{cache_key(ds, size)}"


def open_cache(ds: Dataset, size: int, build: bool = True, workers: int | None = None) -> dict[str, CachedSplit]:
    """Return the cached splits at `size`, building them first if missing or stale."""
    d = cache_dir(ds, size)
    if not _is_complete(d, ds, size):
        if not build:
            raise ImgclfError(f"no cache at {size}px for {ds.root}; run `imgclf prepare --cache {size}`")
        build_cache(ds, size, workers or default_workers())
    out = {}
    for s in SPLITS:
        rows = ds.split_rows(s)
        images = np.load(d / f"{s}-images.npy", mmap_mode="r")
        labels = np.load(d / f"{s}-labels.npy")
        out[s] = CachedSplit(images=images, labels=labels, paths=[r["path"] for r in rows])
    return out


def _is_complete(d: Path, ds: Dataset, size: int) -> bool:
    meta = d / "meta.json"
    if not meta.is_file():
        return False
    try:
        m = read_json(meta)
    except ImgclfError:
        return False
    return m.get("key") == cache_key(ds, size) and m.get("manifest_sha256") == ds.manifest_sha256


def bytes_needed(ds: Dataset, size: int) -> int:
    return len(ds.rows) * (size * size * 3 + 8) + 4096 * len(SPLITS) * 2


def build_cache(ds: Dataset, size: int, workers: int) -> Path:
    """Decode all splits into a temp folder, then rename it into place (atomic for readers)."""
    if not 8 <= size <= 1024:
        raise ImgclfError(f"cache size must be between 8 and 1024 px, got {size}")
    root = ds.root / "cache"
    root.mkdir(exist_ok=True)
    final = cache_dir(ds, size)
    need = bytes_needed(ds, size)
    free = shutil.disk_usage(root).free
    if need + (64 << 20) > free:
        raise ImgclfError(
            f"the {size}px cache needs {need / 2**20:,.0f} MiB but {root} has {free / 2**20:,.0f} MiB free; "
            "free some space or use a smaller size"
        )
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts, jobs = {}, []
        for s in SPLITS:
            rows = ds.split_rows(s)
            counts[s] = len(rows)
            img_path = tmp / f"{s}-images.npy"
            arr = np.lib.format.open_memmap(img_path, mode="w+", dtype=np.uint8, shape=(len(rows), size, size, 3))
            offset = arr.offset  # where the rows start, after the .npy header
            del arr  # workers write into the file themselves; nothing is held in this process
            _reserve(img_path)
            np.save(tmp / f"{s}-labels.npy", np.asarray(ds.labels(rows), dtype=np.int64))
            jobs += [
                (str(img_path), offset, i, size, [(r["path"], r["sha256"]) for r in rows[i : i + _CHUNK]])
                for i in range(0, len(rows), _CHUNK)
            ]
        # One pool for all splits: worker start-up is paid once.
        for err in pmap(_fill_chunk, jobs, workers, f"cache {size}px", chunksize=1, weight=lambda j: len(j[4]),
                        preload=WORKER_MODULES):
            if err:
                raise ImgclfError(err)
        for s in SPLITS:  # durable before the rename makes the cache visible
            _fsync(tmp / f"{s}-images.npy")
        write_json(
            tmp / "meta.json",
            {
                "key": cache_key(ds, size),
                "manifest_sha256": ds.manifest_sha256,
                "size": size,
                "resize": RESIZE_METHOD,
                "format": CACHE_FORMAT,
                "counts": counts,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        _remove_stale(root, size, keep=final)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ImgclfError(
                f"disk full while building the cache in {root}: nothing was replaced, earlier caches are intact; "
                "free some space and run again"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _reserve(path: Path) -> None:
    """Allocate the file's blocks now. A memmap over a sparse file that meets a full disk dies of
    SIGBUS mid-write; reserving first turns that into a clean ENOSPC before any decoding."""
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # filesystems without fallocate
                raise
        finally:
            os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(root: Path, size: int, keep: Path) -> None:
    """Caches of the same size with another key belong to an older manifest: reclaim the disk."""
    for d in root.glob(f"{size}px-*"):
        if d != keep and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _fill_chunk(job) -> str:
    """Worker: decode a run of images into rows [start, start+len) of the split's .npy file.

    Returns '' or a one-line error. Each image's bytes are re-hashed so a file edited since
    prepare is caught instead of silently cached. Images are decoded (DCT-downscaled) first and
    resized afterwards, same-shaped ones in one call (`resize_into`: 14 us an image instead of
    33 at 64 px). The rows go into a local buffer, written with one pwrite: storing them through
    a shared memmap cost ~25 us per 64 px row in page faults, 10x the copy (BENCHMARKS.md, "Ingest").
    """
    path, offset, start, size, items = job
    rows = np.empty((len(items), size, size, 3), dtype=np.uint8)
    pending: dict[tuple, list] = {}  # decoded shape -> [(row, array)], not yet resized
    held = 0
    with timeout_handler():
        for k, (img_path, sha) in enumerate(items):
            try:
                data = read_file(img_path)
            except DecodeError as e:
                return f"{img_path}: {e}; it was readable at prepare time, re-run prepare"
            if hashlib.sha256(data).hexdigest() != sha:
                return f"{img_path} changed since prepare; re-run `imgclf prepare` to refresh the manifest"
            try:
                a = decode_scaled(data, size)
            except DecodeError as e:
                return f"{img_path}: {e}; re-run `imgclf prepare`"
            pending.setdefault(a.shape, []).append((k, a))
            held += a.nbytes
            if held > _MAX_HELD:  # a chunk of big originals: resize what we have before decoding more
                _resize_pending(pending, size, rows)
                held = 0
    _resize_pending(pending, size, rows)
    buf, pos = memoryview(rows).cast("B"), offset + start * rows[0].nbytes
    fd = os.open(path, os.O_WRONLY)
    try:
        while buf:  # pwrite may write less than asked; no flush: one fsync per file at the end
            n = os.pwrite(fd, buf, pos)
            buf, pos = buf[n:], pos + n
    finally:
        os.close(fd)
    return ""


def _resize_pending(pending: dict[tuple, list], size: int, rows: np.ndarray) -> None:
    """Resize each group of same-shaped decoded images in one call, into its rows; empty `pending`."""
    for group in pending.values():
        ks = [k for k, _ in group]
        batch = np.stack([a for _, a in group])
        if ks[-1] - ks[0] == len(ks) - 1:  # consecutive rows (every image the same shape): in place
            resize_into(batch, size, rows[ks[0] : ks[-1] + 1])
        else:
            out = np.empty((len(ks), size, size, 3), dtype=np.uint8)
            resize_into(batch, size, out)
            rows[ks] = out
    pending.clear()
