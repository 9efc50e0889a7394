"""Inference speed of a trained run: PyTorch eager fp32 and bf16 against onnxruntime, model only.

    python benchmarks/inference.py RUN [RUN ...] [--seconds 3]

For each run: single-image latency (batch 1, p50 / p99 over repeated calls) and batched throughput
(batch 64), with no test-time views and with the run's own ("all"). The images are real test
files decoded once beforehand, so the table measures the model path that `predict`, `serve` and
an exported model share; decoding is timed separately (its own row). Exports go to a temporary
folder (unverified: `imgclf export` checks parity, this script only times).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, table


def timed(fn, seconds: float, min_calls: int = 20) -> list[float]:
    for _ in range(3):
        fn()
    out, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(out) < min_calls:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    from imgclf.classifier import Classifier
    from imgclf.export import export, load_runner
    from imgclf.files import read_csv

    rows = []
    for run in args.runs:
        files = [r["path"] for r in read_csv(run / "predictions.csv")][: args.batch]
        for views in ("none", "all"):
            ref = Classifier(run, precision="fp32", views=views)
            if views == "all" and len(ref.sizes) == 1 and not ref.mirror:
                continue  # the run has no test-time views: "all" is "none" again
            t = time.perf_counter()
            decoded = [ref.decode(f) for f in files]
            decode_ms = (time.perf_counter() - t) / len(files) * 1e3
            one = [np.stack(v) for v in zip(*decoded[:1])]
            many = [np.stack(v) for v in zip(*decoded)]
            tmp = Path(tempfile.mkdtemp())
            onnx_run = load_runner(export(run, tmp / "e", views=views, verify=False).path)
            engines = {"pytorch fp32": ref.predict_views,
                       "pytorch bf16": Classifier(run, precision="bf16", views=views).predict_views,
                       "onnxruntime fp32": onnx_run}
            name = f"{ref.meta['model']} {ref.input_size}px, views {views} ({len(ref.sizes) * (2 if ref.mirror else 1)})"
            rows.append([name, "decode (imgclf, per image)", f"{decode_ms:.2f}", "", f"{1e3 / decode_ms:,.0f}"])
            for engine, fn in engines.items():
                lat = np.array(timed(lambda: fn(one), args.seconds)) * 1e3
                bt = np.array(timed(lambda: fn(many), args.seconds, min_calls=5))
                rows.append([name, engine, f"{np.percentile(lat, 50):.2f}", f"{np.percentile(lat, 99):.2f}",
                             f"{len(files) / np.median(bt):,.0f}"])
                print(table(["model", "engine", "batch 1 p50 ms", "p99 ms", f"img/s at batch {len(files)}"], rows[-1:]),
                      flush=True)
    print(f"\n{machine()}, torch threads {torch.get_num_threads()}\n")
    print(table(["model", "engine", "batch 1 p50 ms", "p99 ms", f"img/s at batch {args.batch}"], rows))


if __name__ == "__main__":
    main()
