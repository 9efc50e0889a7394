"""Muon's momentum for the conv filters: the bundled 0.9 against airbench's 0.6, paired.

The 5-minute plan's run (fastcnn-s-p3 at 120 px, 13 epochs, the bundled recipe) once per
momentum on the same split, initial weights and data order: each seed prepares its own split of
the 10,000 PetImages. Only the Muon group's momentum changes (the BN/bias/head SGD group keeps
0.9); the schedule is a LambdaLR, which leaves momentum alone.

    python benchmarks/muon_momentum.py [--momenta 0.9,0.6] [--seeds 0,1] [--epochs 13] [--size 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, need_shared, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--momenta", default="0.9,0.6")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=13)
    ap.add_argument("--size", type=int, default=120)
    args = ap.parse_args()

    import imgclf.train as train_mod
    from imgclf.optim import param_groups
    from imgclf.prepare import PrepareConfig, prepare
    from imgclf.train import TrainConfig, train

    shared = need_shared()
    tmp = Path(tempfile.mkdtemp(prefix="muon-momentum-"))
    rows = []
    for seed in map(int, args.seeds.split(",")):
        data = prepare(PrepareConfig(src=shared / "petimages", out=tmp / f"data{seed}", seed=seed)).root
        for m in map(float, args.momenta.split(",")):
            def groups(recipe, model, m=m):
                return [{**g, "momentum": m} if g.get("muon") else g for g in param_groups(recipe, model)]

            train_mod.param_groups = groups
            t = time.perf_counter()
            r = train(TrainConfig(data=data, out=tmp / f"run{seed}-{m}", model="fastcnn-s-p3", size=args.size,
                                  epochs=args.epochs, seed=seed))
            rows.append([seed, m, f"{r.history[-1]['val_acc']:.2%}", f"{r.metrics['accuracy']:.2%}",
                         f"{time.perf_counter() - t:.0f}"])
            print(rows[-1], flush=True)
    print(machine())
    print(table(["seed", "Muon momentum", "val acc", "test acc", "s"], rows))


if __name__ == "__main__":
    main()
