"""Progress bars (rich) with rate and ETA, and an order-preserving parallel map that drives one."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
R = TypeVar("R")

import sys

# Logs (CI, files) get a fixed 120 columns instead of rich's 80, so bars and tables don't wrap.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


class RateColumn(TextColumn):
    """Items per second; rich's own speed column is for bytes."""

    def __init__(self, unit: str = "it"):
        super().__init__("")
        self.unit = unit

    def render(self, task):  # noqa: D102
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


def make_progress(unit: str = "img", extra: str = "") -> Progress:
    """A bar showing done/total, rate, elapsed and ETA, plus an optional free-text field."""
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    if extra:
        cols.append(TextColumn(extra))
    return Progress(*cols, console=console, transient=False, disable=_quiet())


def _quiet() -> bool:
    return os.environ.get("IMGCLF_QUIET") == "1"


# Below this many units a pool's start-up (~1.5 s with torch preloaded) outweighs the second core.
_MIN_PARALLEL = 1500


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def pmap(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    desc: str,
    unit: str = "img",
    chunksize: int = 32,
    weight: Callable[[T], int] | None = None,
    preload: Sequence[str] = (),
) -> Iterator[R]:
    """Map `fn` over `items` in `workers` processes, yielding results in input order.

    Workers come from a forkserver (spawn where there is none): never forked from this process,
    whose torch thread pools would not survive a fork, yet `preload` modules (torch: 1.4 s) are
    imported once in the server rather than once per worker. Small jobs run in-process.
    `weight(item)` is how many units an item counts for on the bar (images in a chunk, say).
    """
    weight = weight or (lambda _: 1)
    total = sum(weight(it) for it in items)
    with make_progress(unit) as progress:
        task = progress.add_task(desc, total=total)
        if workers <= 1 or total < _MIN_PARALLEL:
            for it in items:
                yield fn(it)
                progress.advance(task, weight(it))
            return
        ctx = _context(preload)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as ex:
            for it, r in zip(items, ex.map(fn, items, chunksize=chunksize)):
                yield r
                progress.advance(task, weight(it))


def _context(preload: Sequence[str]):
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["imgclf.progress", *preload])  # only applies when the server starts
    return ctx


# What cache workers need (torch for the resize kernel: ~1.5 s to import on 2 cores).
WORKER_MODULES = ("torch", "imgclf.cache")


def start_workers(wait: bool = False) -> None:
    """Start the worker server now, with torch preloaded; `wait` blocks until it serves a worker.

    Commands that will build a cache call this first thing: the server imports torch on one core
    while the command imports its own on the other, and every pool forked from it later starts in
    milliseconds. Without it, a server started by `prepare` (which needs no torch) left each cache
    build's workers to import torch themselves, 1.5 s per pool (BENCHMARKS.md, "Ingest").
    """
    if "forkserver" not in mp.get_all_start_methods():
        return
    from multiprocessing import forkserver

    ctx = _context(WORKER_MODULES)
    forkserver.ensure_running()  # spawns the server; it imports the preload modules on its own
    if wait:  # the first worker forks once the server's imports are done
        with ProcessPoolExecutor(1, mp_context=ctx) as ex:
            ex.submit(int).result()


def _one_thread() -> None:
    """Worker processes already split the work: one thread each avoids oversubscribing cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

