"""Does acting on the audit help? The default 5-minute model on the original and on the cleaned set.

    python benchmarks/audit_cleaning.py AUDIT_CSV [--seeds 0,1,2]

For each seed: `imgclf prepare ../shared/data/petimages --seed S`, then a copy of that dataset
without the rows the audit says to exclude, keeping every other image in its split (re-running
prepare --exclude would re-deal the splits, and the two test sets would differ). Both are trained
with what the default 5-minute plan picks for this folder here (`--model fastcnn-s-p3 --size 96
--epochs 13`), fixed: the plan itself would give the second run of a pair more epochs, since it
finds caches the first one built. Both are then scored on the cleaned test split.
"""


from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

from common import imgclf, machine, need_shared, table

PLANNED = ["--model", "fastcnn-s-p3", "--size", "96", "--epochs", "13"]  # the 5-minute plan's pick, 10k PetImages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("audit_csv")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    shared = need_shared()
    drop = {r["path"] for r in csv.DictReader(open(args.audit_csv)) if r["action"] == "exclude"}
    tmp = Path(tempfile.mkdtemp())
    rows = []
    try:
        for seed in map(int, args.seeds.split(",")):
            orig, clean = tmp / f"orig{seed}", tmp / f"clean{seed}"
            imgclf("prepare", shared / "petimages", "--out", orig, "--seed", str(seed))
            shutil.copytree(orig, clean, ignore=shutil.ignore_patterns("cache", "features"))
            kept = [r for r in csv.DictReader(open(orig / "manifest.csv")) if r["path"] not in drop]
            with open(clean / "manifest.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(kept[0]))
                w.writeheader()
                w.writerows(kept)
            removed = {s: sum(1 for r in csv.DictReader(open(orig / "manifest.csv")) if r["path"] in drop and r["split"] == s)
                       for s in ("train", "val", "test")}
            acc = {}
            for name, data in (("original", orig), ("cleaned", clean)):
                run = tmp / f"run-{name}{seed}"
                imgclf("train", data, "--out", run, "--seed", str(seed), *PLANNED)
                imgclf("evaluate", run, "--data", clean, "--split", "test")
                acc[name] = json.loads((run / "metrics.json").read_text())
            rows.append([seed, f"{removed['train']} / {removed['val']} / {removed['test']}",
                         f"{acc['original']['accuracy']:.2%}", f"{acc['cleaned']['accuracy']:.2%}",
                         f"{(acc['cleaned']['accuracy'] - acc['original']['accuracy']) * 100:+.2f}",
                         acc["cleaned"]["n"]])
            print(table(["seed", "removed train/val/test", "original", "cleaned", "points", "test images"], rows[-1:]),
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{machine()}\n{len(drop)} files to exclude in {args.audit_csv}\n")
    print(table(["seed", "removed (train / val / test)", "trained on the original", "trained on the cleaned",
                 "difference (points)", "cleaned test images"], rows))


if __name__ == "__main__":
    main()
