"""Shared helpers for the benchmark scripts: where the data is, tables, subsets."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def need_shared() -> Path:
    if not (SHARED / "petimages").is_dir():
        sys.exit(f"benchmark data not found at {SHARED}; put the shared data folder beside the checkout")
    return SHARED


def machine() -> str:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    from imgclf.device import cpu_has_fast_bf16

    # The same model name covers hosts with and without AVX-512: say which, it sets imgclf's precision
    isa = "AVX-512 BF16: bf16" if cpu_has_fast_bf16() else "no fast bf16: fp32"
    return (f"{cpu} ({isa}), {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


PRESET_NAMES = "vanilla-sgd,minibatch-sgd,momentum,adam"


def baseline_args():
    """The arguments of both baseline scripts (tutorial_way.py, keras_way.py): DATA, --epochs, --presets."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="a dataset folder written by imgclf prepare (--materialize for Keras)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--presets", default=PRESET_NAMES)
    return ap.parse_args()


def table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, cells[1:])])


def subset(src: Path, dst: Path, per_class: int) -> Path:
    """A class-folder copy of the first `per_class` files of each class, as symlinks."""
    shutil.rmtree(dst, ignore_errors=True)
    for c in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (dst / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:per_class]:
            (dst / c / f.name).symlink_to(f)
    return dst


def imgclf(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "IMGCLF_QUIET": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "imgclf", *map(str, args)], env=e, check=True,
                          capture_output=True, text=True)
