"""`--balance` and `--keep`: which imbalance method, and which weights by default, measured.

    python benchmarks/train_options.py balance [--seeds 0,1,2]   # 10:1 Cat:Dog folder
    python benchmarks/train_options.py keep [--seeds 0,1]        # 2,000 balanced PetImages

balance: 1,000 Cat + 100 Dog PetImages, each seed its own split; fastcnn-s-p3 at 96 px for 15
epochs with its bundled recipe, once with each method; test accuracy and balanced accuracy
(the mean of the two recalls) on the equally imbalanced test split.
keep: 1,000 + 1,000 PetImages; for each recipe, one run with --keep last and one with --keep best
from the same seed (training is identical: only the kept weights differ); test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import imgclf, machine, need_shared, table


def folder(shared: Path, dst: Path, counts: dict[str, int]) -> Path:
    for c, n in counts.items():
        (dst / c).mkdir(parents=True)
        for f in sorted((shared / "petimages" / c).iterdir())[:n]:
            (dst / c / f.name).symlink_to(f)
    return dst


def run(data: Path, out: Path, *args: str) -> dict:
    imgclf("train", data, "--out", out, *args)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["balance", "keep"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    shared = need_shared()
    tmp = Path(tempfile.mkdtemp())
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    try:
        if args.what == "balance":
            src = folder(shared, tmp / "src", {"Cat": 1000, "Dog": 100})
            for seed in seeds:
                data = tmp / f"data{seed}"
                imgclf("prepare", src, "--out", data, "--seed", str(seed))
                for method in ("none", "weights", "sampler"):
                    m = run(data, tmp / f"b-{method}-{seed}", "--model", "fastcnn-s-p3", "--size", "96",
                            "--epochs", str(args.epochs), "--seed", str(seed),
                            *(["--balance-method", method] if method != "none" else []))
                    rows.append([seed, method, f"{m['accuracy']:.2%}", f"{m['balanced_accuracy']:.2%}",
                                 f"{m['per_class']['Dog']['recall']:.2%}", f"{m['per_class']['Cat']['recall']:.2%}"])
                    print(table(["seed", "method", "test acc", "balanced acc", "Dog recall", "Cat recall"],
                                rows[-1:]), flush=True)
            header = ["seed", "method", "test acc", "balanced acc", "Dog recall (minority)", "Cat recall"]
        else:
            src = folder(shared, tmp / "src", {"Cat": 1000, "Dog": 1000})
            for seed in seeds:
                data = tmp / f"data{seed}"
                imgclf("prepare", src, "--out", data, "--seed", str(seed))
                for recipe, extra in (("fastcnn", ["--model", "fastcnn-s-p3", "--size", "96"]),
                                      ("adam", ["--model", "fastcnn-s-p3", "--size", "96", "--optimizer", "adam"])):
                    got = {}
                    for keep in ("last", "best"):
                        out = tmp / f"k-{recipe}-{keep}-{seed}"
                        got[keep] = run(data, out, *extra, "--epochs", str(args.epochs), "--seed", str(seed),
                                        "--keep", keep)
                        status = json.loads((out / "status.json").read_text())
                    rows.append([seed, recipe, f"{got['last']['accuracy']:.2%}", f"{got['best']['accuracy']:.2%}",
                                 status.get("best_epoch", "")])
                    print(table(["seed", "recipe", "keep last", "keep best", "best epoch"], rows[-1:]), flush=True)
            header = ["seed", "recipe", "test acc, keep last", "test acc, keep best", f"best epoch of {args.epochs}"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{machine()}\n")
    print(table(header, rows))


if __name__ == "__main__":
    main()
