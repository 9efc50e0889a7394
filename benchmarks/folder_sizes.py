"""Does the default `imgclf train FOLDER` (5 minutes, planned) fit a folder larger than the shared 10k?

    python benchmarks/big_folder.py [--images 25000] [--budget 300]

Builds a stand-in folder from the 10,000 shared PetImages: each image, its mirror cropped to 92%,
then (until --images) an 85% crop, as JPEGs. Its variants of one picture land in different splits,
so the test accuracy is inflated and means nothing; the seconds and the plan's choice are the
point. Then `imgclf train FOLDER --out RUN [--budget seconds=B]` from the raw JPEGs, timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import imgclf, machine, need_shared, table

VARIANTS = ("orig", "mirror92", "crop85")


def _write(job: tuple[str, str, str]) -> None:
    from PIL import Image, ImageOps

    src, dst, kind = job
    im = Image.open(src).convert("RGB")
    if kind != "orig":
        f = 0.92 if kind == "mirror92" else 0.85
        w, h = im.size
        cw, ch = int(w * f), int(h * f)
        im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        im = ImageOps.mirror(im) if kind == "mirror92" else im
    im.save(dst, quality=90)


def build(shared: Path, dst: Path, n: int) -> int:
    files = sorted((shared / "petimages" / c / f.name, c) for c in ("Cat", "Dog")
                   for f in (shared / "petimages" / c).iterdir())
    jobs = []
    for kind in VARIANTS:
        for f, c in files:
            if len(jobs) < n:
                jobs.append((str(f), str(dst / c / f"{f.stem}-{kind}.jpg"), kind))
    for c in ("Cat", "Dog"):
        (dst / c).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_write, jobs, chunksize=256))
    return len(jobs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=25_000)
    ap.add_argument("--budget", type=int, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    n = build(need_shared(), tmp / "folder", args.images)
    t0 = time.perf_counter()
    extra = ["--budget", f"seconds={args.budget}"] if args.budget else []
    imgclf("train", tmp / "folder", "--out", tmp / "run", *extra)
    seconds = time.perf_counter() - t0
    conf = json.loads((tmp / "run" / "config.json").read_text())
    acc = json.loads((tmp / "run" / "metrics.json").read_text())["accuracy"]
    status = json.loads((tmp / "run" / "status.json").read_text())
    c = conf["plan"]["chosen"]
    print(machine())
    print(table(["images", "budget s", "plan picked", "epochs run", "stopped by the hard stop", "seconds, end to end",
                 "test accuracy (inflated: variants leak across splits)"],
                [[n, conf["plan"]["budget_seconds"], f"{c['model']} {c['size']} px, {c['epochs']} epochs",
                  status["epoch"], status["stopped_by_budget"], f"{seconds:.0f}", f"{acc:.2%}"]]))


if __name__ == "__main__":
    main()
