"""Muon's Newton-Schulz iteration in bf16 or fp32: its cost per step, and training throughput.

bf16 matmuls are native on CPUs with AVX512-BF16 or AMX and emulated elsewhere; imgclf's MuonSGD
picks the dtype by the CPU (muon.ns_dtype). This prints both on the machine it runs on.

    python benchmarks/muon_dtype.py [--model fastcnn-s-p3] [--size 120] [--batch-sizes 16,128]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from common import machine, table


def orthogonalize_ms(model_name: str, dtype: torch.dtype, reps: int = 5) -> float:
    """Milliseconds to orthogonalise every filter bank of the model once (one optimizer step's share)."""
    from imgclf.models import create_model
    from imgclf.muon import orthogonalize

    banks = [p.detach() for p in create_model(model_name, 2).parameters() if p.ndim == 4]
    orthogonalize(banks[0], dtype=dtype)  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        for g in banks:
            orthogonalize(g, dtype=dtype)
    return (time.perf_counter() - t) / reps * 1000


def train_rate(model_name: str, size: int, batch: int, ns: torch.dtype | None, seconds: float = 3.0) -> float:
    """Training images per second with the model's recipe at `batch`; ns None: SGD without Muon."""
    import imgclf.muon as muon
    from imgclf.models import create_model, get_spec
    from imgclf.optim import build_optimizer, param_groups

    torch.manual_seed(0)
    bundled = get_spec(model_name).recipe
    recipe = replace(bundled, batch_size=batch, muon=bundled.muon if ns else None)
    model = create_model(model_name, 2).to(memory_format=torch.channels_last).train()
    opt = build_optimizer(recipe, param_groups(recipe, model))
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    pick, muon.ns_dtype = muon.ns_dtype, lambda device: ns
    try:
        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            step()
            n += 1
        return n * batch / (time.perf_counter() - t)
    finally:
        muon.ns_dtype = pick


def main():
    from imgclf.device import cpu_has_fast_bf16

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fastcnn-s-p3")
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--batch-sizes", default="16,128")
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.model} at {args.size} px, fp32 training (the step's own precision)")
    print(f"imgclf's pick here: Newton-Schulz in {'bf16' if cpu_has_fast_bf16() else 'fp32'}\n")
    rows = [["orthogonalise every filter bank once", f"{orthogonalize_ms(args.model, torch.bfloat16):.0f} ms",
             f"{orthogonalize_ms(args.model, torch.float32):.0f} ms", ""]]
    for b in map(int, args.batch_sizes.split(",")):
        rows.append([f"train, batch {b}", f"{train_rate(args.model, args.size, b, torch.bfloat16):.0f} img/s",
                     f"{train_rate(args.model, args.size, b, torch.float32):.0f} img/s",
                     f"{train_rate(args.model, args.size, b, None):.0f} img/s"])
    print(table(["", "Muon, bf16 iteration", "Muon, fp32 iteration", "no Muon (SGD)"], rows))


if __name__ == "__main__":
    main()
