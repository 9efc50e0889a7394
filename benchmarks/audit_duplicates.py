"""Where to draw the near-duplicate line: feature similarity of altered copies against that of
distinct images.

    python benchmarks/audit_duplicates.py DATA [--copies 200]

DATA: a prepared PetImages dataset. Its images' nearest distinct neighbour similarities (the
audit's ImageNet features, cosine) are set against those of altered copies of `--copies` of its
images: re-encoded at JPEG quality 70, resized to 80%, cropped by 5% a side, and all three.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from common import machine, table

ALTER = {
    "jpeg q70": lambda im: im,
    "resized 80%": lambda im: im.resize((int(im.width * 0.8), int(im.height * 0.8))),
    "cropped 5%": lambda im: im.crop((im.width // 20, im.height // 20, im.width * 19 // 20, im.height * 19 // 20)),
    "all three": lambda im: im.crop((im.width // 20, im.height // 20, im.width * 19 // 20, im.height * 19 // 20))
    .resize((int(im.width * 0.72), int(im.height * 0.72))),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--thresholds", default="0.88,0.90,0.92,0.95")
    args = ap.parse_args()
    from imgclf.audit import dataset_features
    from imgclf.manifest import load_dataset
    from imgclf.prepare import PrepareConfig, prepare

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    ts = [float(t) for t in args.thresholds.split(",")]
    ds = load_dataset(args.data)
    x, _, paths, _ = dataset_features(ds, 2)
    f = unit(x)
    nn = np.zeros(len(f))
    for b in range(0, len(f), 2048):
        s = f[b : b + 2048] @ f.T
        s[np.arange(len(s)), np.arange(b, b + len(s))] = -1
        nn[b : b + 2048] = s.max(1)
    rows = [["nearest other image in the dataset", len(nn), *(f"{q:.3f}" for q in np.quantile(nn, [0.5, 0.99, 0.999])),
             f"{nn.max():.3f}", *(f"{(nn >= t).sum()} images" for t in ts)]]
    tmp = Path(tempfile.mkdtemp())
    try:
        picks = np.random.default_rng(0).choice(len(paths), args.copies, replace=False)
        src = tmp / "src"
        for name, fn in ALTER.items():
            (src / name.replace(" ", "_").replace("%", "")).mkdir(parents=True)
        for k in picks:
            im = Image.open(paths[k]).convert("RGB")
            for name, fn in ALTER.items():
                fn(im).save(src / name.replace(" ", "_").replace("%", "") / f"{k}.jpg", quality=70)
        cds = prepare(PrepareConfig(src=src, out=tmp / "data", workers=2))
        cx, _, cpaths, _ = dataset_features(cds, 2)
        cf = unit(cx)
        for name in ALTER:
            folder = name.replace(" ", "_").replace("%", "")
            sims = [float(cf[i] @ f[int(Path(p).stem)]) for i, p in enumerate(cpaths) if Path(p).parent.name == folder]
            sims = np.array(sims)
            rows.append([f"altered copy vs its original: {name}", len(sims),
                         *(f"{q:.3f}" for q in np.quantile(sims, [0.5, 0.01, 0.001])), f"{sims.min():.3f}",
                         *(f"{(sims >= t).mean():.1%} found" for t in ts)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{machine()}\n")
    print(table(["cosine similarity of", "n", "median", "1% / 99% point", "0.1% / 99.9% point", "min / max",
                 *(f"at {t:g}" for t in ts)], rows))


if __name__ == "__main__":
    main()
