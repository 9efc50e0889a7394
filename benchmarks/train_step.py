"""Training-step throughput of a model in each precision/layout on this machine.

    python benchmarks/train_step.py [--model seed-cnn] [--batch-sizes 1,32]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from common import machine, table


def rate(model_name: str, bs: int, precision: str, channels_last: bool, seconds: float = 3.0) -> float:
    from imgclf.models import create_model, get_spec

    torch.manual_seed(0)
    size = get_spec(model_name).input_size
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = create_model(model_name, 2).to(memory_format=fmt).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(bs, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (bs,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = m(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        step()
        n += 1
    return n * bs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--batch-sizes", default="1,32,100")
    args = ap.parse_args()
    from imgclf.device import keep_freed_memory

    modes = [("fp32", False, "fp32 NCHW"), ("fp32", True, "fp32 channels_last"), ("bf16", True, "bf16 channels_last")]
    rates = {}
    # glibc's default malloc first (mmap/munmap per large block), then as imgclf trains
    # (device.keep_freed_memory; it cannot be switched back off within a process).
    for malloc in ("system", "keep"):
        if malloc == "keep":
            assert keep_freed_memory(), "needs Linux/glibc"
        for bs in map(int, args.batch_sizes.split(",")):
            for precision, cl, label in modes:
                rates[bs, label, malloc] = rate(args.model, bs, precision, cl)
    rows = []
    for bs in map(int, args.batch_sizes.split(",")):
        base = rates[bs, modes[0][2], "system"]
        for _, _, label in modes:
            r0, r1 = rates[bs, label, "system"], rates[bs, label, "keep"]
            rows.append([args.model, bs, label, f"{r0:,.0f}", f"{r1:,.0f}", f"{r1 / base:.2f}x"])
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}\n")
    print(table(["model", "batch", "mode", "img/s, system malloc", "img/s, malloc keeps memory (imgclf)",
                 "vs fp32 NCHW, system malloc"], rows))


if __name__ == "__main__":
    main()
