"""The tutorial's experiment end to end: imgclf against the tutorial's PyTorch way and Keras.

Four presets x N epochs of seed-cnn at 224 px on ../shared/data/petimages, one invocation,
the same split for everyone (imgclf's prepare, laid out as folders for Keras). Wall times
include everything each contestant does from the JPEGs (imgclf: prepare with its cache + compare).

    python benchmarks/end_to_end.py --epochs 3 [--jobs N] [--skip-keras] [--skip-tutorial]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PRESET_NAMES, ROOT, imgclf, machine, need_shared, table

PRESETS = PRESET_NAMES.split(",")
KERAS_PY = ROOT / "benchmarks" / ".venv-keras" / "bin" / "python"


def run_lines(cmd: list[str]) -> tuple[float, dict]:
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    secs = time.perf_counter() - t
    res = {}
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            res[d["preset"]] = d
    return secs, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip-keras", action="store_true")
    ap.add_argument("--skip-tutorial", action="store_true")
    ap.add_argument("--jobs", type=int, default=0, help="imgclf compare --jobs (runs trained at once; 0: its default)")
    args = ap.parse_args()
    shared = need_shared()
    tmp = Path(tempfile.mkdtemp(prefix="imgclf-e2e-"))
    data, cmp_ = tmp / "data", tmp / "cmp"
    results = {}
    try:
        t = time.perf_counter()
        imgclf("prepare", shared / "petimages", "--out", data, "--materialize", "symlink", "--cache", "224")
        imgclf("compare", data, "--out", cmp_, "--epochs", str(args.epochs), "--optimizers", ",".join(PRESETS),
               *(["--jobs", str(args.jobs)] if args.jobs else []))
        secs = time.perf_counter() - t
        import csv

        rows = {r["recipe"]: r for r in csv.DictReader(open(cmp_ / "summary.csv"))}
        results["imgclf"] = (secs, {p: {"test_accuracy": float(rows[p]["test_accuracy"])} for p in PRESETS})
        print(f"imgclf: {secs:.0f} s", flush=True)
        if not args.skip_tutorial:
            results["tutorial PyTorch (a)"] = run_lines([sys.executable, str(ROOT / "benchmarks" / "tutorial_way.py"),
                                                         str(data), "--epochs", str(args.epochs)])
            print(f"tutorial: {results['tutorial PyTorch (a)'][0]:.0f} s", flush=True)
        if not args.skip_keras:
            if not KERAS_PY.exists():
                sys.exit(f"no Keras venv at {KERAS_PY}: python3 -m venv benchmarks/.venv-keras && "
                         "benchmarks/.venv-keras/bin/pip install tensorflow-cpu==2.21.0 pillow")
            results["Keras (b)"] = run_lines([str(KERAS_PY), str(ROOT / "benchmarks" / "keras_way.py"), str(data),
                                              "--epochs", str(args.epochs)])
            print(f"keras: {results['Keras (b)'][0]:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results["imgclf"][0]
    rows = [[name, f"{secs:.0f}", f"{secs / base:.1f}x",
             *(f"{res[p]['test_accuracy']:.1%}" if p in res else "-" for p in PRESETS)]
            for name, (secs, res) in results.items()]
    print(f"\nmachine: {machine()}; seed-cnn 224 px, {args.epochs} epochs per preset, PetImages 10k, "
          f"70/30 split with 7% val; imgclf compare --jobs {args.jobs or 'default'}\n")
    print(table(["contestant", "wall s", "vs imgclf", *(f"{p} test acc" for p in PRESETS)], rows))


if __name__ == "__main__":
    main()
