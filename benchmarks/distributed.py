"""One process against N gloo ranks on this machine: training throughput, and what the gradient
all-reduce costs per step.

    python benchmarks/distributed.py [--images 2000] [--nproc 2] [--models fastcnn-s-p3,seed-cnn]

For each model: `imgclf train` on a PetImages subset (the first --images/2 of each class), 3
epochs, once in one process (all cores) and once with `--nproc N` (torchrun, one thread per rank
as torchrun sets it); img/s of the last epoch (the first warms up), test accuracy of each. Then, in
N spawned gloo ranks, the all-reduce of one step's gradients (the model's parameter count in
fp32) timed alone: the communication each step pays before the optimizer can run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

from common import imgclf, machine, need_shared, subset, table

SIZES = {"fastcnn-s-p3": ["--size", "96"], "seed-cnn": [], "fastcnn-s": ["--size", "64"]}


def last_epoch_rate(run: Path, n_train: int) -> float:
    rows = list(csv.DictReader(open(run / "history.csv", newline="")))
    return n_train / float(rows[-1]["seconds"])


def allreduce_ms(rank: int, world: int, numel: int, init: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    t = torch.randn(numel)
    for _ in range(5):
        dist.all_reduce(t)
    dist.barrier()
    reps, t0 = 30, time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(t)
    ms = (time.perf_counter() - t0) / reps * 1e3
    if rank == 0:
        Path(out).write_text(str(ms))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--models", default="fastcnn-s-p3,seed-cnn")
    args = ap.parse_args()
    shared = need_shared()
    import torch
    import torch.multiprocessing as mp

    from imgclf.models import create_model

    tmp = Path(tempfile.mkdtemp())
    src = subset(shared / "petimages", tmp / "src", args.images // 2)
    imgclf("prepare", src, "--out", tmp / "data")
    n_train = json.loads((tmp / "data" / "dataset.json").read_text())["counts"]["train"]
    n_train = sum(n_train.values())
    rows = []
    for model in args.models.split(","):
        common = ["--model", model, *SIZES.get(model, []), "--epochs", "3", "--seed", "0"]
        res = {}
        for n in (1, args.nproc):
            run = tmp / f"{model}-{n}"
            extra = ["--nproc", str(n)] if n > 1 else []
            t0 = time.perf_counter()
            imgclf("train", tmp / "data", "--out", run, *common, *extra)
            res[n] = (last_epoch_rate(run, n_train), json.loads((run / "metrics.json").read_text())["accuracy"],
                      time.perf_counter() - t0)
        numel = sum(p.numel() for p in create_model(model, 2).parameters())
        out = tmp / f"ar-{model}"
        mp.spawn(allreduce_ms, args=(args.nproc, numel, str(tmp / f"init-{model}"), str(out)), nprocs=args.nproc)
        ar = float(out.read_text())
        batch = 128 if model.startswith("fastcnn") else 32
        steps_per_s = res[args.nproc][0] / batch
        rows.append([model, f"{numel / 1e6:.2f} M", f"{res[1][0]:.0f}", f"{res[args.nproc][0]:.0f}",
                     f"{res[args.nproc][0] / res[1][0]:.2f}x", f"{ar:.2f}", f"{ar * steps_per_s / 10:.1f}%",
                     f"{res[1][1]:.2%} / {res[args.nproc][1]:.2%}", f"{res[1][2]:.0f} / {res[args.nproc][2]:.0f}"])
        print(rows[-1], flush=True)
    print(f"\n{machine()}; {n_train} training images, 3 epochs, img/s of the last; torch {torch.__version__}\n")
    print(table(["model", "parameters", "1 process img/s", f"{args.nproc} ranks img/s", "speed-up",
                 "all-reduce ms/step", "all-reduce share of a step", "test acc 1 / N", "command s 1 / N"], rows))


if __name__ == "__main__":
    sys.exit(main())
