"""Peak RSS of a training process as the dataset grows: it should stay flat.

    python benchmarks/memory.py [--sizes 2000,10000]

Each size: a class-balanced subset of ../shared/data/petimages, prepared and cached at 224 px
first, then one epoch of seed-cnn (minibatch-sgd) in a fresh process whose peak RSS
(ru_maxrss) is read when it exits. The cache itself is 150 KB an image on disk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import imgclf, machine, need_shared, subset, table

PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); " \
       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,10000")
    args = ap.parse_args()
    shared = need_shared()
    rows = []
    for n in map(int, args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="imgclf-mem-"))
        try:
            subset(shared / "petimages", tmp / "src", n // 2)
            imgclf("prepare", tmp / "src", "--out", tmp / "data", "--cache", "224")
            cache_mb = sum(p.stat().st_size for p in (tmp / "data" / "cache").rglob("*.npy")) / 2**20
            cmd = [sys.executable, "-m", "imgclf", "train", str(tmp / "data"), "--out", str(tmp / "run"),
                   "--model", "seed-cnn", "--optimizer", "minibatch-sgd", "--epochs", "1"]
            kb = int(subprocess.run([sys.executable, "-c", PEAK, *cmd], check=True, capture_output=True,
                                    text=True).stdout.split()[-1])
            n_train = sum(1 for line in open(tmp / "data" / "manifest.csv") if ",train," in line)
            rows.append([n, n_train, f"{cache_mb:,.0f}", f"{kb / 1024:,.0f}"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {machine()}\n")
    print(table(["images", "train images", "cache on disk MiB", "peak RSS MiB (train, 1 epoch)"], rows))


if __name__ == "__main__":
    main()
