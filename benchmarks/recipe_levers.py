"""Levers on the 5-minute plan's run, each against the same reference on the same split, paired.

The reference: fastcnn-s-p3 at 120 px, 13 epochs (what 5 minutes afford on the 2-core AVX-512
host), the bundled recipe, three test-time views; `whitened` is the plan's rung (fastcnn-s-p3w).
Each seed prepares its own split of the 10,000 PetImages; every variant of a seed shares that
split, the initial weights and the data order. Epochs are fixed, so the accuracies do not depend
on the host's load (the seconds do).

    python benchmarks/recipe_levers.py [--variants bundled,batch-64,lookahead,whitened,2x2-stem] [--seeds 0,1] [--epochs 13] [--size 120]

Variants (levers the library keeps no knob for are applied from outside it):
  bundled    fastcnn-s-p3 and its bundled recipe (the pairs' reference)
  batch-64   batch 64 instead of 128, lr and schedule shape unchanged: twice the steps for the
             same images; on the AVX2-only host a batch-64 step runs as many img/s as batch 128
  lookahead  airbench94's lookahead: every 5 steps a slow copy of the weights (BN statistics
             too) moves 1 - d of the way to them and the weights are set back to it, d ramping
             as 0.95^5 (t / T)^3 over the run's T steps; after the last step the weights are
             the slow copy
  whitened   fastcnn-s-p3w: the stem's 32 filters frozen at the 3x3 patches' 16 principal
             directions (scaled to unit variance) and their negatives, set from the training
             images (models/fastcnn.py, whiten_stem); the stem's BN and GELU follow as before
  2x2-stem   fastcnn-s, the 2x2 patch stem, at 2/3 of --size: the same grid after the stem, so
             about the same seconds (the plan's 160 / 128 / 96 px rungs against -p3w at 240 / 192 / 144)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import machine, need_shared, table

LOOKAHEAD_EVERY = 5  # airbench94's
LOOKAHEAD_DECAY = 0.95 ** 5  # its decay at the end of the ramp


def with_lookahead(make_loop):
    """make_loop, with airbench94's lookahead update after each of the loop's optimizer steps."""

    def make(cfg, net, *args, **kwargs):
        loop, steps_per_epoch = make_loop(cfg, net, *args, **kwargs)
        total = steps_per_epoch * cfg.epochs
        live = [v for v in loop.net.state_dict().values() if v.is_floating_point()]
        slow = [v.clone() for v in live]
        t = 0

        @torch.no_grad()
        def look(optimizer, args, kwargs):
            nonlocal t
            t += 1
            if t % LOOKAHEAD_EVERY == 0 or t == total:
                d = 1.0 if t == total else LOOKAHEAD_DECAY * (t / total) ** 3
                torch._foreach_lerp_(slow, live, 1.0 - d)
                torch._foreach_copy_(live, slow)

        loop.optimizer.register_step_post_hook(look)
        return loop, steps_per_epoch

    return make


def run_pairs(variants: dict, seeds: list[int], epochs: int, size: int, column: str = "variant") -> None:
    """Each seed's split once, then one run per variant on it: {name: (make_loop wrapper or None,
    TrainConfig overrides)}. Prints a row per run and the table."""
    import imgclf.train as train_mod
    from imgclf.prepare import PrepareConfig, prepare
    from imgclf.train import TrainConfig, train

    make_loop = train_mod.make_loop
    shared = need_shared()
    tmp = Path(tempfile.mkdtemp(prefix="recipe-levers-"))
    rows = []
    for seed in seeds:
        data = prepare(PrepareConfig(src=shared / "petimages", out=tmp / f"data{seed}", seed=seed)).root
        for name, (wrap, overrides) in variants.items():
            train_mod.make_loop = wrap(make_loop) if wrap else make_loop
            t = time.perf_counter()
            r = train(TrainConfig(data=data, out=tmp / f"run{seed}-{name}", epochs=epochs, seed=seed,
                                  **{"model": "fastcnn-s-p3", "size": size, **overrides}))
            rows.append([seed, name, f"{r.history[-1]['val_acc']:.2%}", f"{r.metrics['accuracy']:.2%}",
                         f"{time.perf_counter() - t:.0f}"])
            print(rows[-1], flush=True)
    train_mod.make_loop = make_loop
    print(machine())
    print(table(["seed", column, "val acc", "test acc", "s"], rows))


def variants(size: int) -> dict:
    return {"bundled": (None, {}), "batch-64": (None, {"batch_size": 64}), "lookahead": (with_lookahead, {}),
            "whitened": (None, {"model": "fastcnn-s-p3w"}),
            "2x2-stem": (None, {"model": "fastcnn-s", "size": size * 2 // 3})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="bundled,batch-64,lookahead,whitened")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=13)
    ap.add_argument("--size", type=int, default=120)
    args = ap.parse_args()
    names, known = args.variants.split(","), variants(args.size)
    if unknown := [v for v in names if v not in known]:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(known)}")
    run_pairs({v: known[v] for v in names}, [int(s) for s in args.seeds.split(",")], args.epochs, args.size)


if __name__ == "__main__":
    main()
