"""Data-parallel training on PyTorch's own engine: torch.distributed, started by torchrun.

`torchrun --nproc-per-node N -m imgclf train ...` (or `imgclf train --nproc N`, which runs that
launcher) starts N processes; torchrun's c10d rendezvous gives each its RANK, WORLD_SIZE and
LOCAL_RANK, and `context()` joins them into one process group (gloo on CPU, NCCL on GPUs).
What train.py does with it, and why:

- Every rank draws the same seeded permutation each epoch (the order generator is global state)
  and takes its share of every global batch (`shard`): the recipe's batch is the global batch,
  so recipes keep their meaning and their learning rates.
- Augmentation draws are per rank, from a stream seeded by (seed, epoch, rank), so nothing
  rank-specific needs saving: a checkpoint holds global state only and resumes on any number of
  ranks.
- Rank 0 alone writes the run folder, evaluates (val and test: every image exactly once, no
  padded duplicates) and tells the others the val figures, so stopping rules agree everywhere.
- A rank that dies takes the job down: torchrun's agent stops the others, and every collective
  has a timeout (TIMEOUT_S) so no rank waits forever.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ImgclfError

# How long a collective waits for a peer before failing. A rank that died is normally noticed by
# torchrun's agent within a second or two (it tears the group down); this bounds the rest, such as
# a peer stuck in a cache build. Rank 0's validation pass runs while the others wait at a barrier,
# so this must exceed the longest evaluation.
TIMEOUT_S = 600


@dataclass(frozen=True)
class Dist:
    """Who this process is in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def context() -> Dist:
    """This process's place in a torchrun job, joining the process group on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not d.main:
        os.environ["IMGCLF_QUIET"] = "1"  # one progress display: rank 0's
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=TIMEOUT_S))
    return d


def close() -> None:
    """Leave the process group at the end of a command every rank finished: wait for the others,
    then tear it down. A rank that leaves while a peer still talks to it, or exits with the group
    up, can abort in gloo's teardown (SIGABRT, "terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Each rank on a node takes its own GPU."""
    return torch.device("cuda", d.local_rank) if device.type == "cuda" and d.active else device


def wrap(net: torch.nn.Module, d: Dist, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The module as it trains: wrapped in DistributedDataParallel under torchrun (its backward
    all-reduces the gradients, so every rank's optimizer takes the same step)."""
    if not d.active:
        return net
    if sync_bn:
        if device.type != "cuda":
            raise ImgclfError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm runs on GPUs only")
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def in_turn(d: Dist, fn):
    """fn() on every rank, in three turns: rank 0, then the first rank of every other node, then
    the rest. Whatever fn writes (a cache, features) is then written once per filesystem, shared
    by all nodes or one per node, and never by two ranks at once; the later turns find it done."""
    out = None
    for turn in (d.rank == 0, d.rank != 0 and d.local_rank == 0, d.local_rank != 0):
        if turn:
            out = fn()
        barrier(d)
    return out


def long_barrier(d: Dist) -> None:
    """A barrier without the collective timeout, for ranks done with their share of a comparison
    while others still train (hours, perhaps); a dead rank still ends the job through torchrun."""
    if d.active:
        global _LONG
        if _LONG is None:
            _LONG = dist.new_group(backend="gloo", timeout=timedelta(days=7))
        dist.barrier(group=_LONG)


_LONG = None


def broadcast(d: Dist, obj):
    """Rank 0's `obj` on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share(d: Dist, obj):
    """Rank 0's `obj` on every rank, however long rank 0 took to make it (a test pass, a plan, a
    learning-rate search): the others wait at `long_barrier`, not a timed collective."""
    long_barrier(d)
    return broadcast(d, obj)


def same_dataset(d: Dist, ds):
    """The dataset, after checking that every rank reads the one rank 0 reads (by its manifest's hash)."""
    if broadcast(d, ds.manifest_sha256) != ds.manifest_sha256:
        raise ImgclfError(f"{ds.root} on rank {d.rank} is not rank 0's dataset (another manifest.csv): prepare it "
                          "once on a shared filesystem, or with the same command and seed on every node")
    return ds


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank when it is true on one (a time budget running out)."""
    if not d.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_all(d: Dist, *values: float) -> list[float]:
    """Sums over the ranks (an epoch's loss, correct answers and images)."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(order: torch.Tensor, batch_size: int, d: Dist, drop_last: bool) -> tuple[torch.Tensor, list[int]]:
    """This rank's rows of a global order, and the size of each global batch: the rank takes its
    consecutive 1/world of every global batch, so the ranks' batches together are the
    single-process batches. A last batch smaller than the world is dropped (every rank must take
    the same number of steps)."""
    n = len(order) - len(order) % batch_size if drop_last else len(order)
    parts, sizes = [], []
    for b0 in range(0, n, batch_size):
        batch = order[b0 : min(b0 + batch_size, n)]
        if len(batch) < d.world:
            break
        parts.append(torch.tensor_split(batch, d.world)[d.rank])
        sizes.append(len(batch))
    return (torch.cat(parts) if parts else order[:0]), sizes


def rank_seed(seed: int, epoch: int, d: Dist) -> int:
    """The seed of one rank's random stream (augmentation, dropout) in one epoch."""
    return (seed * 1_000_003 + epoch) * 1_009 + d.rank


def check_batch(batch_size: int, d: Dist, recipe_name: str) -> int:
    """The per-rank batch: the recipe's (global) batch split evenly over the ranks."""
    if batch_size % d.world:
        raise ImgclfError(f"recipe '{recipe_name}' has batch size {batch_size}, which {d.world} processes cannot "
                          f"share evenly; pick --nproc dividing it or set --batch-size")
    return batch_size // d.world


def launch(nproc: int, argv: list[str]) -> int:
    """`imgclf ... --nproc N`: run the same command under torchrun on this machine."""
    from torch.distributed.run import main as torchrun

    args = ["--standalone", "--nproc-per-node", str(nproc), "-m", "imgclf", *argv]
    try:
        torchrun(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except Exception as e:  # torchrun's ChildFailedError: it has printed which rank failed and why
        print(f"error: a process of the job failed ({type(e).__name__}); its own message is above", file=sys.stderr)
        return 1
    return 0


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without `--nproc N` / `--nproc=N` (for the processes torchrun starts)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
