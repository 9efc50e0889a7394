"""Where a training step's time goes in imgclf's own loop: reading the batch from the cache,
augmenting it, turning it into the model's input, and the model's step itself.

    python benchmarks/train_loop.py [--model seed-cnn] [--batch-size 32] [--batches 120] [--rounds 3]

PetImages are prepared and cached at the model's input size in a temporary folder first (not
timed). Each round runs `--batches` steps of Adam in bf16 channels-last, as `compare` does, and
reports milliseconds per batch for each part, once with imgclf's batch transforms and once with
their plain formulas (a per-image `torch.where` for flips; permute, float, scale and shift),
alternating in one process on one model: this machine's speed drifts between processes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import machine, need_shared, table


def plain_flip(x: torch.Tensor, coins: torch.Generator) -> torch.Tensor:
    m = torch.rand(x.shape[0], generator=coins) < 0.5
    return torch.where(m.view(-1, 1, 1, 1), x.flip(2), x)


def plain_input(mean, std):
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return lambda x: (x.permute(0, 3, 1, 2).float() * scale + shift).contiguous(memory_format=torch.channels_last)


def one_round(split, model, opt, spec, plain: bool, batch_size: int, n_batches: int, seed: int) -> dict[str, float]:
    from imgclf.load import Augment, augment, batches, input_fn

    to_input = plain_input(spec.mean, spec.std) if plain else input_fn(torch.device("cpu"), spec.mean, spec.std, True)
    flip = plain_flip if plain else (lambda x, g: augment(x, Augment(), g))
    loss_fn = torch.nn.CrossEntropyLoss()
    order, coins = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    spent = dict(read=0.0, augment=0.0, input=0.0, step=0.0)
    t0 = t = time.perf_counter()
    for i, (x, y) in enumerate(batches(split, batch_size, shuffle=True, generator=order)):
        t1 = time.perf_counter()
        x = flip(x, coins)
        t2 = time.perf_counter()
        xb = to_input(x)
        t3 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(xb)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t4 = time.perf_counter()
        for k, a, b in (("read", t, t1), ("augment", t1, t2), ("input", t2, t3), ("step", t3, t4)):
            spent[k] += b - a
        t = t4
        if i + 1 == n_batches:
            break
    n = i + 1
    out = {k: v / n * 1e3 for k, v in spent.items()}
    out["img/s"] = n * batch_size / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()


    os.environ["IMGCLF_QUIET"] = "1"
    from imgclf.cache import open_cache
    from imgclf.device import keep_freed_memory
    from imgclf.models import create_model, get_spec
    from imgclf.prepare import PrepareConfig, prepare

    keep_freed_memory()  # as `train` does
    spec = get_spec(args.model)
    size = spec.input_size
    tmp = Path(tempfile.mkdtemp(prefix="imgclf-loop-"))
    try:
        ds = prepare(PrepareConfig(src=need_shared() / "petimages", out=tmp / "d"))
        split = open_cache(ds, size)["train"]
        torch.manual_seed(0)
        model = create_model(args.model, 2).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        one_round(split, model, opt, spec, False, args.batch_size, 10, seed=0)  # warm-up
        rows = []
        for r in range(args.rounds):
            for plain in (True, False):
                res = one_round(split, model, opt, spec, plain, args.batch_size, args.batches, seed=r)
                rows.append(["plain" if plain else "imgclf", r + 1,
                             *(f"{res[k]:.2f}" for k in ("read", "augment", "input", "step")), f"{res['img/s']:,.0f}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {machine()}; {args.model} {size} px, batch {args.batch_size}, Adam, bf16 channels-last, "
          f"{args.batches} batches a round\n")
    print(table(["transforms", "round", "read ms", "augment ms", "input ms", "step ms", "img/s in all"], rows))


if __name__ == "__main__":
    main()
