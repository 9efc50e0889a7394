"""Muon's momentum for the conv filters: the bundled 0.9 against airbench's 0.6, paired.

The 5-minute plan's run (fastcnn-s-p3 at 120 px, 13 epochs, the bundled recipe) once per
momentum on the same split, initial weights and data order: each seed prepares its own split of
the 10,000 PetImages (recipe_levers.run_pairs). Only the Muon group's momentum changes (the
BN/bias/head SGD group keeps 0.9); the schedule is a LambdaLR, which leaves momentum alone.

    python benchmarks/muon_momentum.py [--momenta 0.9,0.6] [--seeds 0,1] [--epochs 13] [--size 120]
"""

from __future__ import annotations

import argparse

from recipe_levers import run_pairs


def with_muon_momentum(m: float):
    """A make_loop wrapper that sets the Muon group's momentum to m."""

    def wrap(make_loop):
        def make(*args, **kwargs):
            loop, steps_per_epoch = make_loop(*args, **kwargs)
            for g in loop.optimizer.param_groups:
                if g.get("muon"):
                    g["momentum"] = m
            return loop, steps_per_epoch

        return make

    return wrap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--momenta", default="0.9,0.6")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=13)
    ap.add_argument("--size", type=int, default=120)
    args = ap.parse_args()
    momenta = [float(m) for m in args.momenta.split(",")]
    run_pairs({f"{m:g}": (with_muon_momentum(m), {}) for m in momenta}, [int(s) for s in args.seeds.split(",")],
              args.epochs, args.size, column="Muon momentum")


if __name__ == "__main__":
    main()
