"""The seconds a command spends outside its work: imports, set-up, plots and the report.

Whole processes as a user runs them, on a small generated folder (80 images) where training
itself takes ~3 s: what remains is the fixed cost every `imgclf train` pays, and a --budget pays
it too. `--src` times other checkouts' packages beside this one (runs interleaved, A B A B, so
a drift of the machine's speed hits each alike).

    python benchmarks/command_overhead.py [--runs 5] [--src OTHER_CHECKOUT/src ...]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import ROOT, machine, table

TRAIN = ["--model", "seed-cnn", "--optimizer", "momentum", "--epochs", "4", "--batch-size", "8", "--precision", "fp32"]


def make_folder(root: Path) -> Path:
    """Two classes of 40 noisy flat-colour images (40x32): learnt in an epoch, decoded in no time."""
    rng = np.random.default_rng(0)
    for name, color in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(40):
            a = (rng.normal(0, 25, (32, 40, 3)) + color).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.jpg")
    return root


def run(src: str, *args) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": src, "IMGCLF_QUIET": "1"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--src", action="append", default=[], help="another checkout's src folder, timed beside this one")
    args = ap.parse_args()
    srcs = [str(ROOT / "src"), *map(str, args.src)]
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    folder = make_folder(tmp / "src")
    run(srcs[0], "-m", "imgclf", "prepare", folder, "--out", tmp / "data")
    one = next((folder / "red").iterdir())
    times: dict[tuple[str, str], list[float]] = {}
    training: dict[str, list[float]] = {}
    for r in range(args.runs + 1):  # the first round warms the disk cache, not counted
        for k, src in enumerate(srcs):
            out = tmp / f"run{k}-{r}"
            cases = {
                "python -c 'import imgclf.train'": ("-c", "import imgclf.train"),
                "imgclf train (80 images, 4 epochs)": ("-m", "imgclf", "train", tmp / "data", "--out", out, *TRAIN),
                "imgclf evaluate RUN": ("-m", "imgclf", "evaluate", out),
                "imgclf predict RUN one.jpg": ("-m", "imgclf", "predict", out, one),
            }
            for name, cmd in cases.items():
                seconds, stdout = run(src, *cmd)
                if r:
                    times.setdefault((name, src), []).append(seconds)
                    if "train" in cmd:
                        training.setdefault(src, []).append(float(re.search(r"\(training ([\d.]+) s", stdout)[1]))
    rows = []
    names = list(dict.fromkeys(name for name, _ in times))
    for (name, src), ts in sorted(times.items(), key=lambda kv: (names.index(kv[0][0]), srcs.index(kv[0][1]))):
        train_s = statistics.median(training[src]) if name.startswith("imgclf train") else None
        rows.append([name, src, f"{statistics.median(ts):.2f}", f"{min(ts):.2f}-{max(ts):.2f}",
                     "" if train_s is None else f"{train_s:.2f}",
                     "" if train_s is None else f"{statistics.median(ts) - train_s:.2f}"])
    print(machine())
    print(f"{args.runs} runs each, medians\n")
    print(table(["command", "package", "wall s", "min-max", "of it training", "outside training"], rows))


if __name__ == "__main__":
    main()
