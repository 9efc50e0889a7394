"""Time to accuracy from raw JPEGs: every second counted (prepare, cache, features, train, evaluate).

    python benchmarks/time_to_accuracy.py [--only fastcnn-5min,probe,...] [--images DIR] [--seeds 0,1]

Each contestant is one `imgclf train RAW_FOLDER` command on ../shared/data/petimages (or
--images): it prepares the raw folder itself (the tutorial's split: test 0.30, val 0.07), builds
its cache, trains and ends with its test accuracy. Prints accuracy against elapsed wall time.
Each seed of --seeds is a different split, initialisation and data order: the spread is the noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import imgclf, machine, need_shared, table

CONTESTANTS = {
    # name: train arguments (after RAW_FOLDER --out RUN)
    "default": [],  # no option at all: the plan for 5 minutes (a probe, where one is expected better)
    "fastcnn-5min": ["--from-scratch", "--budget", "seconds=300"],  # the plan, from-scratch candidates only
    "fastcnn-30min": ["--from-scratch", "--budget", "seconds=1800"],
    "probe": ["--model", "efficientnet-lite0", "--pretrained", "--mode", "probe", "--optimizer", "adam",
              "--epochs", "10", "--batch-size", "64"],
    "probe-lite1": ["--model", "efficientnet-lite1", "--pretrained", "--mode", "probe", "--optimizer", "adam",
                    "--epochs", "10", "--batch-size", "64"],
    "probe-lite2": ["--model", "efficientnet-lite2", "--pretrained", "--mode", "probe", "--optimizer", "adam",
                    "--epochs", "10", "--batch-size", "64"],
    "finetune": ["--model", "efficientnet-lite0", "--pretrained", "--mode", "finetune", "--optimizer", "adam",
                 "--lr", "0.0003", "--epochs", "1", "--batch-size", "32"],
    "seed-cnn": ["--model", "seed-cnn", "--optimizer", "adam", "--epochs", "5"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(CONTESTANTS))
    ap.add_argument("--images", type=Path, help="raw class folders (default ../shared/data/petimages)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, one run per contestant and seed")
    args = ap.parse_args()
    images = args.images or need_shared() / "petimages"
    rows = []
    for name, seed in ((n, int(s)) for n in args.only.split(",") for s in args.seeds.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="imgclf-tta-"))
        try:
            t = time.perf_counter()
            imgclf("train", images, "--out", tmp / "run", *CONTESTANTS[name], "--seed", str(seed))
            total = time.perf_counter() - t
            conf = json.loads((tmp / "run" / "config.json").read_text())
            acc = json.loads((tmp / "run" / "metrics.json").read_text())["accuracy"]
            meta = conf["model_meta"]
            size = meta.get("train_size", meta["input_size"])
            what = f"{conf['model']} {size}px, {len(_history(tmp / 'run'))} epochs"
            rows.append([name, " ".join(CONTESTANTS[name]), seed, what, f"{total:.0f}", f"{acc:.2%}"])
            print(rows[-1], flush=True)
            if conf.get("plan"):  # where a planned budget went: probes, the epochs' real pace
                p = conf["plan"]
                with open(tmp / "run" / "history.csv", newline="") as f:
                    secs = [float(r["seconds"]) for r in csv.DictReader(f)]
                print(f"  plan: {p['chosen']}, {p['seconds_left_at_plan']} s left when counting epochs, expected "
                      f"{p['expected_train_seconds']} s of training; epochs took {sum(secs):.0f} s "
                      f"({min(secs):.1f}-{max(secs):.1f} s each); rungs: "
                      + ", ".join(f"{m['model']}@{m['size']} {m['train_img_per_s']:.0f} img/s {m.get('rate', '')}"
                                  for m in p["measured"]), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine: {machine()}; {images}\n")
    print(table(["contestant", "train arguments", "seed", "trained", "total s (JPEGs to test accuracy)", "test accuracy"],
                rows))


def _history(run: Path) -> list[str]:
    return (run / "history.csv").read_text().splitlines()[1:]


if __name__ == "__main__":
    main()
