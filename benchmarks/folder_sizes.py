"""Does the default `imgclf train FOLDER --out RUN` (no other option) work at every folder size?

    python benchmarks/folder_sizes.py [--images 200,600,10000,25000,100000] [--budget 300]
                                      [--alternative] [--seed 0]

Folders up to 10,000 images are the first N/2 cats and N/2 dogs of ../shared/data/petimages
(symlinks). Larger ones are stand-ins built from those 10,000 as JPEGs: each image, then its
mirror, then centre crops of 92/85/78/70% and their mirrors, until N. A picture's variants land
in different splits, so their test accuracy is inflated; the plan's choice and the seconds are
the point there. Each run is timed from the raw JPEGs to its test metrics. With --alternative,
the best candidate the plan did not pick runs beside it: `--from-scratch` under the same budget
when it picked a probe; when it trained from scratch, the fastest probe it weighed (no budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import imgclf, machine, need_shared, subset, table

from imgclf.plan import probe_args

# (centre-crop fraction, mirrored) per copy of an image, in the order a stand-in adds them
VARIANTS = [(1.0, False), (1.0, True), (0.92, False), (0.92, True), (0.85, False), (0.85, True),
            (0.78, False), (0.78, True), (0.70, False), (0.70, True)]


def _write(job: tuple[str, str, float, bool]) -> None:
    from PIL import Image, ImageOps

    src, dst, f, mirror = job
    im = Image.open(src).convert("RGB")
    w, h = im.size
    cw, ch = int(w * f), int(h * f)
    im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    (ImageOps.mirror(im) if mirror else im).save(dst, quality=90)


def build(pets: Path, dst: Path, n: int) -> Path:
    """A stand-in folder of n images (n > 10,000), written by 2 processes."""
    files = sorted((f, c) for c in ("Cat", "Dog") for f in (pets / c).iterdir())
    jobs = [(str(f), str(dst / c / f"{f.stem}-{int(s * 100)}{'m' if m else ''}.jpg"), s, m)
            for s, m in VARIANTS for f, c in files][:n]
    for c in ("Cat", "Dog"):
        (dst / c).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_write, jobs, chunksize=256))
    return dst


def timed_train(folder: Path, out: Path, args: list[str]) -> dict:
    t = time.perf_counter()
    imgclf("train", folder, "--out", out, *args)
    seconds = time.perf_counter() - t
    conf = json.loads((out / "config.json").read_text())
    status = json.loads((out / "status.json").read_text())
    return {"seconds": seconds, "accuracy": json.loads((out / "metrics.json").read_text())["accuracy"],
            "plan": conf.get("plan") or {}, "model": conf["model"], "mode": conf["mode"] if conf["pretrained"] else "",
            "epochs": status["epoch"]}


def what(r: dict) -> str:
    c = r["plan"].get("chosen", {})
    if r["mode"] == "probe":
        return f"{r['model']} probe"
    each = f" x {c['epoch_images']:,} img" if c.get("epoch_images") else ""
    if c.get("parts"):  # an ensemble: its parts, the fine-tune's epochs
        return f"{r['model']} ({c['parts']}), {r['epochs']} epochs{each}"
    return f"{r['model']} {c.get('size', '')} px, {r['epochs']} epochs{each}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="200,600,10000,25000,100000")
    ap.add_argument("--budget", type=int, default=None, help="seconds (default: none given, the default 300)")
    ap.add_argument("--alternative", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    pets = need_shared() / "petimages"
    budget = ["--budget", f"seconds={a.budget}"] if a.budget else []
    seed = ["--seed", str(a.seed)]
    rows = []
    for n in map(int, a.images.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="imgclf-sizes-"))
        try:
            folder = (pets if n == 10_000 else subset(pets, tmp / "folder", n // 2) if n < 10_000
                      else build(pets, tmp / "folder", n))
            r = timed_train(folder, tmp / "run", budget + seed)
            alt = ""
            if a.alternative:
                if r["mode"] == "probe":
                    args = ["--from-scratch", *budget]
                else:
                    probes = [c for c in r["plan"]["candidates"] if c["candidate"].endswith(" probe")
                              and c.get("estimated_seconds")]
                    args = probe_args(min(probes, key=lambda c: c["estimated_seconds"])["candidate"].split()[0])
                b = timed_train(folder, tmp / "alt", args + seed)
                alt = f"{what(b)}: {b['seconds']:.0f} s, {b['accuracy']:.2%}"
            rows.append([n, a.budget or 300, what(r), f"{r['seconds']:.0f}", f"{r['accuracy']:.2%}", alt])
            print(rows[-1], flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(machine())
    print(table(["images", "budget s", "the plan picked", "seconds, end to end", "test accuracy",
                 "best alternative: seconds, test accuracy"], rows))


if __name__ == "__main__":
    main()
