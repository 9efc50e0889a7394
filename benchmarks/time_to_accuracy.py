"""Time to accuracy from raw JPEGs: every second counted (prepare, cache, features, train, evaluate).

    python benchmarks/time_to_accuracy.py [--only probe,finetune,seed-cnn]

Each contestant starts from ../shared/data/petimages in a fresh folder (the tutorial's split:
test 0.30, val 0.07) and ends with its test accuracy. Prints accuracy against elapsed wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import imgclf, machine, need_shared, table

CONTESTANTS = {
    # name: train arguments (after DATA --out RUN)
    "probe": ["--model", "efficientnet-lite0", "--pretrained", "--mode", "probe", "--optimizer", "adam",
              "--epochs", "10", "--batch-size", "64"],
    "finetune": ["--model", "efficientnet-lite0", "--pretrained", "--mode", "finetune", "--optimizer", "adam",
                 "--lr", "0.0003", "--epochs", "1", "--batch-size", "32"],
    "seed-cnn": ["--model", "seed-cnn", "--optimizer", "adam", "--epochs", "5"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(CONTESTANTS))
    args = ap.parse_args()
    shared = need_shared()
    rows = []
    for name in args.only.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="imgclf-tta-"))
        try:
            t = time.perf_counter()
            imgclf("prepare", shared / "petimages", "--out", tmp / "data")
            t_prep = time.perf_counter() - t
            imgclf("train", tmp / "data", "--out", tmp / "run", *CONTESTANTS[name])
            total = time.perf_counter() - t
            acc = json.loads((tmp / "run" / "metrics.json").read_text())["accuracy"]
            rows.append([name, " ".join(CONTESTANTS[name]), f"{t_prep:.0f}", f"{total:.0f}", f"{acc:.2%}"])
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine: {machine()}; PetImages 10k, test split 2,999 images\n")
    print(table(["contestant", "train arguments", "prepare s", "total s (JPEGs to test accuracy)", "test accuracy"],
                rows))


if __name__ == "__main__":
    main()
