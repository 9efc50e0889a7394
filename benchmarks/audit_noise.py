"""Label audit: does it find planted label flips, and how fast is it?

    python benchmarks/audit_noise.py DATA [--rate 0.05] [--seeds 0,1,2]

DATA is a prepared dataset (the shared 10k PetImages: `imgclf prepare ../shared/data/petimages
--out pets`). The ImageNet features of its images are computed (or read from the cache) once;
then, per seed, `rate` of the labels are flipped to another class at random, and the audit's
label-issue stage (cross-fitted probabilities + confident learning) runs on the noisy labels.
The features do not depend on the labels, so this is exactly what `imgclf audit` computes on a
folder with those files moved to the wrong class. Precision counts every flagged image that was
not planted as a false positive, real label errors of PetImages included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, table


HEADER = ["seed", "C", "planted flips", "flagged", "planted and flagged", "precision", "recall",
          "accuracy vs true labels", "seconds (cross-fit + confident learning)"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--c", default="", help="sklearn C values to try instead of the audit's (e.g. 0.5,0.1,0.001)")
    args = ap.parse_args()
    from imgclf.audit import AuditConfig, cross_fit, dataset_features, label_issues
    from imgclf.manifest import load_dataset

    ds = load_dataset(args.data)
    t = time.perf_counter()
    x, y, paths, splits = dataset_features(ds, workers=2)
    t_feat = time.perf_counter() - t
    cfg = AuditConfig(data=args.data, out="-")
    rows = []
    for seed in map(int, args.seeds.split(",")):
        rng = np.random.default_rng(seed)
        flip = rng.choice(len(y), int(round(args.rate * len(y))), replace=False)
        noisy = y.copy()
        k = len(ds.classes)
        noisy[flip] = (y[flip] + rng.integers(1, k, len(flip))) % k  # another class, uniformly
        fit_n = len(y) * (cfg.folds - 1) / cfg.folds
        for c_per_image in [float(c) * fit_n for c in args.c.split(",") if c] or [cfg.C_per_image]:
            t = time.perf_counter()
            probs = cross_fit(x, noisy, cfg.folds, seed, c_per_image)
            found = {paths.index(r["path"]) for r in label_issues(probs, noisy, paths, splits, ds.classes)
                     if r["kind"] == "label"}
            secs = time.perf_counter() - t
            planted = set(flip.tolist())
            tp = len(found & planted)
            rows.append([seed, f"{c_per_image / fit_n:.2g}", len(planted), len(found), tp,
                         f"{tp / max(len(found), 1):.1%}", f"{tp / len(planted):.1%}",
                         f"{(probs.argmax(1) == y).mean():.2%}", f"{secs:.1f}"])
            print(table(HEADER, rows[-1:]), flush=True)
    print(f"\n{machine()}\n{len(y)} images, features {t_feat:.1f} s (cached: a read)\n")
    print(table(HEADER, rows))


if __name__ == "__main__":
    main()
