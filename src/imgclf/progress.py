"""Progress bars (rich) with rate and ETA, and an order-preserving parallel map that drives one."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
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
    if _RELAY:
        return _Relayed(*cols, console=console, queue=_RELAY["queue"], name=_RELAY["name"])
    return Progress(*cols, console=console, transient=False, disable=_quiet())


# A worker process of `compare --jobs` draws no bars (several processes' bars would interleave on
# one terminal): its bars' state goes to the parent, which draws one line per run (`relayed_bars`).
_RELAY: dict = {}


def relay_to(queue=None, name: str = "") -> None:
    """From now on this process's bars report to `queue` (the one given before, when None) as
    run `name`, instead of drawing."""
    if queue is not None:
        _RELAY["queue"] = queue
    _RELAY["name"] = name


class _Relayed(Progress):
    """Draws nothing; sends (run, description, done, total, fields) of the bar it last moved, at
    most every RELAY_EVERY seconds and when a bar completes."""

    def __init__(self, *cols, queue, name, **kw):
        super().__init__(*cols, disable=True, **kw)
        self._queue, self._name, self._sent = queue, name, 0.0

    def update(self, task_id, **kw):  # noqa: D102
        super().update(task_id, **kw)
        self._send(task_id)

    def advance(self, task_id, advance: float = 1) -> None:  # noqa: D102
        super().advance(task_id, advance)
        self._send(task_id)

    def _send(self, task_id) -> None:
        t = self._tasks[task_id]
        now = time.monotonic()
        if now - self._sent < RELAY_EVERY and not t.finished:
            return
        self._sent = now
        self._queue.put((self._name, t.description, t.completed, t.total, dict(t.fields)))


RELAY_EVERY = 0.25  # s: the parent's display refreshes at about this rate anyway


def relayed_bars(queue, names: list[str], running) -> None:
    """Draw one bar per run from what its worker relays, until `running()` is False: the bar shows
    the worker's current bar (an epoch, a feature pass, the test pass) with its own rate and ETA."""
    import queue as queues

    with make_progress("img", "{task.fields[note]}") as bar:
        tasks = {n: bar.add_task(f"{n}: waiting", total=None, note="") for n in names}
        shown: dict[str, str] = {}
        while True:
            try:
                name, desc, done, total, fields = queue.get(timeout=RELAY_EVERY)
            except queues.Empty:
                if not running():
                    return
                continue
            note = " ".join(f"{k} {v}" for k, v in fields.items())
            if shown.get(name) != desc:  # a new bar in that worker: its rate starts afresh
                shown[name] = desc
                label = desc if desc.startswith(name + " ") else f"{name}: {desc}"
                bar.reset(tasks[name], total=total, completed=done, description=label, note=note)
            else:
                bar.update(tasks[name], total=total, completed=done, note=note)


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

