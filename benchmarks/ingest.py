"""Ingest throughput: prepare, then the decoded-cache build (two passes), and both in one pass
(`prepare --cache`: a header check, then one decode per file), against the raw decode rate.

    python benchmarks/ingest.py [--workers 2]

Raw decode = simplejpeg decoding each file's bytes at full size, no resize, in the same number
of processes (pool started before the clock): the practical ceiling for anything that decodes.
imgclf's worker server is likewise started before the clock, as the CLI starts it at launch.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from common import machine, need_shared, table


def _decode_files(paths: list[str]) -> int:
    import simplejpeg

    for p in paths:
        with open(p, "rb") as f:
            simplejpeg.decode_jpeg(f.read())
    return len(paths)


def raw_decode_rate(files: list[str], workers: int) -> float:
    chunks = [files[i : i + 64] for i in range(0, len(files), 64)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        list(ex.map(_decode_files, [files[:8]] * workers))  # start and warm the pool
        t = time.perf_counter()
        n = sum(ex.map(_decode_files, chunks))
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--sizes", default="64,128,224")
    args = ap.parse_args()
    import torch  # noqa: F401  (every command that builds a cache has torch loaded already)

    from imgclf.cache import open_cache
    from imgclf.prepare import PrepareConfig, prepare
    from imgclf.progress import start_workers

    # As the CLI does at launch: the worker server imports torch while the command starts up.
    # Wait for it here, as raw_decode_rate starts its pool before its clock.
    start_workers(wait=True)

    shared = need_shared()
    os.environ["IMGCLF_QUIET"] = "1"
    rows = []
    for name, src, by_name in [("petimages", shared / "petimages", False), ("kaggle-sample", shared / "kaggle-sample", True)]:
        files = sorted(glob.glob(str(src / "**" / "*.jpg"), recursive=True))
        for f in files:  # warm the page cache so every contestant reads from memory
            Path(f).read_bytes()
        raw = raw_decode_rate(files, args.workers)
        tmp = Path(tempfile.mkdtemp(prefix="imgclf-ingest-"))
        try:
            os.sync()
            t = time.perf_counter()
            ds = prepare(PrepareConfig(src=src, out=tmp / "d", labels_from_filename=by_name, workers=args.workers))
            t_prep = time.perf_counter() - t
            n = len(ds.rows)
            for size in map(int, args.sizes.split(",")):
                os.sync()  # each contestant starts with nothing of the last one's left to write back
                t = time.perf_counter()
                open_cache(ds, size, workers=args.workers)
                t_cache = time.perf_counter() - t
                os.sync()
                t = time.perf_counter()  # the same in one pass: `imgclf prepare --cache SIZE`
                one = prepare(PrepareConfig(src=src, out=tmp / f"one{size}", labels_from_filename=by_name,
                                            workers=args.workers, cache=size))
                t_one = time.perf_counter() - t
                assert one.manifest_sha256 == ds.manifest_sha256
                rows.append([name, n, size, f"{n / t_prep:,.0f}", f"{n / t_cache:,.0f}", f"{n / (t_prep + t_cache):,.0f}",
                             f"{n / t_one:,.0f}", f"{raw:,.0f}", f"{n / t_cache / raw:.0%}", f"{n / t_one / raw:.0%}"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {machine()}; {args.workers} worker processes\n")
    print(table(["dataset", "images", "size", "prepare img/s", "cache img/s", "prepare, then cache img/s",
                 "prepare --cache img/s", "raw decode img/s", "cache / raw", "prepare --cache / raw"], rows))


if __name__ == "__main__":
    main()
