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
from contextlib import contextmanager
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


def _bytes_needed(n: int, size: int) -> int:
    return n * (size * size * 3 + 8) + 4096 * len(SPLITS) * 2


def build_cache(ds: Dataset, size: int, workers: int) -> Path:
    """Decode every split of a prepared dataset into a new cache; a file that no longer decodes as
    it did at prepare time is an error (the manifest is out of date)."""
    rows = {s: ds.split_rows(s) for s in SPLITS}
    items = {s: [(r["path"], r["sha256"]) for r in rs] for s, rs in rows.items()}
    tmp, results = decode_splits(ds.root, size, items, {s: ds.labels(rs) for s, rs in rows.items()}, workers)
    for (path, _), got in zip((i for s in SPLITS for i in items[s]), results):
        if isinstance(got, str):
            shutil.rmtree(tmp, ignore_errors=True)
            raise ImgclfError(f"{path}: {got}; re-run `imgclf prepare` to refresh the manifest")
    return finish_cache(tmp, ds, size)


def decode_splits(root: Path, size: int, items: dict[str, list[tuple[str, str]]], labels: dict[str, list[int]],
                  workers: int) -> tuple[Path, list]:
    """Decode each split's (path, sha256) items into the rows of a new cache, in a temp folder under
    root/cache that `finish_cache` makes visible. Returns (that folder, one result per item in
    split order: the source's (width, height) as shown, or why it did not decode). Prepare calls it
    before its manifest exists, so that each file is decoded once (prepare.py)."""
    if not 8 <= size <= 1024:
        raise ImgclfError(f"cache size must be between 8 and 1024 px, got {size}")
    root = root / "cache"
    root.mkdir(exist_ok=True)
    need = _bytes_needed(sum(len(v) for v in items.values()), size)
    free = shutil.disk_usage(root).free
    if need + (64 << 20) > free:
        raise ImgclfError(
            f"the {size}px cache needs {need / 2**20:,.0f} MiB but {root} has {free / 2**20:,.0f} MiB free; "
            "free some space or use a smaller size"
        )
    tmp = root / f".tmp-{size}px-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with _cleaned_up(tmp, root):
        jobs = []
        for s in SPLITS:
            img_path = tmp / f"{s}-images.npy"
            arr = np.lib.format.open_memmap(img_path, mode="w+", dtype=np.uint8, shape=(len(items[s]), size, size, 3))
            offset = arr.offset  # where the rows start, after the .npy header
            del arr  # workers write into the file themselves; nothing is held in this process
            _reserve(img_path)
            np.save(tmp / f"{s}-labels.npy", np.asarray(labels[s], dtype=np.int64))
            jobs += [(str(img_path), offset, i, size, items[s][i : i + _CHUNK]) for i in range(0, len(items[s]), _CHUNK)]
        # One pool for all splits: worker start-up is paid once.
        results = [r for chunk in pmap(_fill_chunk, jobs, workers, f"cache {size}px", chunksize=1,
                                       weight=lambda j: len(j[4]), preload=WORKER_MODULES) for r in chunk]
    return tmp, results


def finish_cache(tmp: Path, ds: Dataset, size: int) -> Path:
    """Make a cache decoded by `decode_splits` for `ds` visible, atomically, and reclaim stale ones."""
    root, final = tmp.parent, cache_dir(ds, size)
    with _cleaned_up(tmp, root):
        for s in SPLITS:  # durable before the rename makes the cache visible
            _fsync(tmp / f"{s}-images.npy")
        write_json(tmp / "meta.json", {
            "key": cache_key(ds, size),
            "manifest_sha256": ds.manifest_sha256,
            "size": size,
            "resize": RESIZE_METHOD,
            "format": CACHE_FORMAT,
            "counts": {s: len(ds.split_rows(s)) for s in SPLITS},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        _remove_stale(root, size, keep=final)
        _publish(tmp, final, ds, size)
    return final


def _publish(tmp: Path, final: Path, ds: Dataset, size: int) -> None:
    """Rename the finished cache into place. Two runs on one dataset (two `imgclf train` in two
    terminals) may build the same cache at once: the second to finish keeps the first's (the same
    key, the same bytes) and drops its own, so the files the first is reading never vanish."""
    try:
        os.rename(tmp, final)  # fails where final is a non-empty folder, replaces an empty one
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if _is_complete(final, ds, size):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(final, ignore_errors=True)  # a broken leftover nobody can be reading
        os.rename(tmp, final)


@contextmanager
def _cleaned_up(tmp: Path, root: Path):
    """Remove the temp folder on any failure; a full disk becomes a one-line error."""
    try:
        yield
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


def _fill_chunk(job) -> list:
    """Worker: decode a run of images into rows [start, start+len) of the split's .npy file.

    Returns, per image, its (width, height) as shown, or why it did not decode (its row is left
    black). Each image's bytes are re-hashed so a file edited since it was hashed is caught
    instead of silently cached. Images are decoded (DCT-downscaled) first and
    resized afterwards, same-shaped ones in one call (`resize_into`: 14 us an image instead of
    33 at 64 px). The rows go into a local buffer, written with one pwrite: storing them through
    a shared memmap cost ~25 us per 64 px row in page faults, 10x the copy (BENCHMARKS.md, "Ingest").
    """
    path, offset, start, size, items = job
    rows = np.empty((len(items), size, size, 3), dtype=np.uint8)
    out: list = []
    pending: dict[tuple, list] = {}  # decoded shape -> [(row, array)], not yet resized
    held = 0
    with timeout_handler():
        for k, (img_path, sha) in enumerate(items):
            try:
                data = read_file(img_path)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise DecodeError("changed since prepare read it")
                a, shown = decode_scaled(data, size)
            except DecodeError as e:
                out.append(str(e))
                rows[k] = 0
                continue
            out.append(shown)
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
    return out


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
