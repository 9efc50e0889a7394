"""Stage 6: the tutorial's experiment, done so that its answer can be trusted.

One model; per seed, one set of initial weights shared by every recipe, and one split; one
training run per (recipe, seed), each derived from the comparison's base TrainConfig. Then
(aggregate.py): mean, std and 95% CI per recipe, paired significance tests across seeds, a
ranking; overlaid curves with bands and an HTML report. Optional: equal budgets in steps or
seconds, time-to-target-accuracy, a per-recipe LR search on the val split (lrsearch.py), and
recipes trained in parallel worker processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import distributed
from .aggregate import run_name, seed_rows, summarize
from .cache import open_cache
from .errors import Diverged, ImgclfError
from .files import prepare_out_dir, write_csv, write_json
from .lrsearch import tune_learning_rates, with_tuned
from .manifest import load_dataset
from .models import create_model, get_spec
from .plots import plot_overlay
from .prepare import ensure_prepared
from .progress import console, default_workers
from .recipes import PRESETS, TUTORIAL_PRESETS, Recipe
from .runfolder import read_status
from .train import TrainConfig, train

BUDGET_KINDS = ("epochs", "steps", "seconds")
MODEL = "seed-cnn"  # a comparison's default model: the tutorial's CNN
EPOCHS = 2  # and its default epochs per recipe


@dataclass
class CompareConfig:
    # What every run shares: data, out (the comparison folder), model, epochs, the first seed, device,
    # precision, flips, pretrained/mode, force. Each (recipe, seed) run is derived from it (run_config).
    base: TrainConfig
    recipes: list[Recipe] = field(default_factory=lambda: [PRESETS[n] for n in TUTORIAL_PRESETS])
    seeds: int = 1  # K runs per recipe, seeds base.seed .. base.seed+K-1
    resplit: bool = False  # each seed also draws its own train/val/test split
    budget: str | None = None  # "epochs=10" | "steps=5000" | "seconds=300"; default: base.epochs
    target: float | None = None  # report time and steps to this val accuracy
    tune_lr: bool = False
    tune_epochs: int = 1
    # Runs trained at once, each in a worker process with its share of the cores. None: two lanes
    # wherever there are two cores and two runs: batch-1 SGD gains nothing from a second thread
    # (195 img/s on one or two) while the batched recipes run at 73% of their two-thread speed on
    # one, so side by side the tutorial's experiment took 168 s against 228 s one run at a time
    # (BENCHMARKS.md). Each run's CPU seconds are reported beside its wall time.
    jobs: int | None = None

    def __post_init__(self):
        if self.base.model == "auto":
            self.base = replace(self.base, model=MODEL)
        if self.base.epochs is None:
            self.base = replace(self.base, epochs=EPOCHS)

    @property
    def out(self) -> Path:
        return Path(self.base.out)

    def validate(self) -> "CompareConfig":
        if not self.recipes:
            raise ImgclfError("--optimizers: give at least one recipe")
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ImgclfError(f"--optimizers: recipe names must be unique, got {names}")
        for r in self.recipes:
            r.validate()
        self.base.validate()
        if get_spec(self.base.model).parts:
            names = ", ".join(m for _, m, _ in get_spec(self.base.model).parts)
            raise ImgclfError(f"--model {self.base.model} trains part by part, not from one set of initial weights per "
                              f"seed: compare one of its parts instead ({names})")
        if not 1 <= self.seeds <= 100:
            raise ImgclfError(f"--seeds must be between 1 and 100, got {self.seeds}")
        if self.target is not None and not 0 < self.target <= 1:
            raise ImgclfError(f"--target is a val accuracy in (0, 1], got {self.target}")
        if self.jobs is not None and not 1 <= self.jobs <= 64:
            raise ImgclfError(f"--jobs must be between 1 and 64, got {self.jobs}")
        if self.tune_epochs < 1:
            raise ImgclfError(f"--tune-epochs must be >= 1, got {self.tune_epochs}")
        parse_budget(self.budget)
        return self

    @property
    def seed_list(self) -> list[int]:
        return [self.base.seed + k for k in range(self.seeds)]

    def run_config(self, recipe: Recipe, seed: int, out: Path, data: Path, budget: bool = True) -> TrainConfig:
        """One (recipe, seed) run: the base config with this recipe, seed, folder and split, and the
        comparison's budget (unless `budget` is False) turned into limits."""
        epochs, max_steps, max_seconds = recipe.epochs or self.base.epochs, None, None
        kind, v = (parse_budget(self.budget) if budget else None) or ("", 0)
        if kind == "epochs":
            epochs = int(v)
        elif kind == "steps":
            n_train = len(load_dataset(data).split_rows("train"))
            max_steps = int(v)
            epochs = math.ceil(max_steps / math.ceil(n_train / recipe.batch_size))
        elif kind == "seconds":
            max_seconds, epochs = v, 100_000  # stops on time, not epochs
        return replace(self.base, data=data, out=out, recipe=recipe, seed=seed, epochs=epochs, max_steps=max_steps,
                       max_seconds=max_seconds, report=False, force=False)


def parse_budget(budget: str | None) -> tuple[str, float] | None:
    """'steps=5000' -> ('steps', 5000.0); None stays None."""
    if budget is None:
        return None
    kind, _, value = budget.partition("=")
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if kind not in BUDGET_KINDS or not v > 0 or (kind != "seconds" and v != int(v)):
        raise ImgclfError(f"--budget must be epochs=N, steps=N or seconds=S with a positive number, got '{budget}'")
    return kind, v


def compare(cfg: CompareConfig, resume: bool = False) -> list[dict]:
    """Train every (recipe, seed) (skipping finished ones on resume) and rank; returns summary rows.
    Under torchrun the runs are dealt out over the processes, each run on its own (one process,
    no gradient exchange); rank 0 sets up, waits for all, and summarises."""
    cfg.validate()
    d = distributed.context()
    cfg, units = distributed.share(d, _setup(cfg, resume) if d.main else None)  # --tune-lr: minutes, or hours
    mine = units[d.rank :: d.world]
    _run_units(mine, lanes(cfg.jobs, len(mine)) if not d.active else 1)
    distributed.long_barrier(d)  # every run finished before the summary reads their folders
    if not d.main:
        return distributed.share(d, None)
    out = cfg.out
    per_seed = seed_rows(out, cfg)
    rows = summarize(out, cfg, per_seed)
    histories = {r.name: [x["history"] for x in per_seed if x["recipe"] == r.name and x["history"]]
                 for r in cfg.recipes}
    plot_overlay(histories, "loss", out / "loss.png")
    plot_overlay(histories, "acc", out / "accuracy.png")
    from .report import build_report

    build_report(out)
    return distributed.share(d, rows)


def _setup(cfg: CompareConfig, resume: bool) -> tuple[CompareConfig, list[tuple[TrainConfig, dict, bool]]]:
    """The comparison folder, its data, caches, shared initial weights and (--tune-lr) learning
    rates; returns the config as tuned and the runs still to train."""
    out, base = cfg.out, cfg.base
    if resume:
        if not (out / "compare.json").is_file():
            raise ImgclfError(f"{out} is not a comparison folder (no compare.json); nothing to resume")
        cfg = with_tuned(cfg, out)
    else:
        prepare_out_dir(out, base.force, "comparison")
    size = get_spec(base.model).input_size
    cfg = replace(cfg, base=replace(base, data=ensure_prepared(base.data, out / "data", base.seed, size)))
    base = cfg.base
    if not resume:
        _write_spec(out, cfg)

    data_for = {s: _dataset_for_seed(cfg, out, s) for s in cfg.seed_list}
    for d in dict.fromkeys(data_for.values()):
        open_cache(load_dataset(d), size, workers=base.workers)  # build once, up front
    num_classes = len(load_dataset(base.data).classes)
    inits = {s: _initial_weights(out, base, s, num_classes) for s in cfg.seed_list}

    if cfg.tune_lr and not (out / "tune.csv").is_file():
        cfg = tune_learning_rates(cfg, out, data_for[base.seed], inits[base.seed])

    units = []
    for recipe in cfg.recipes:
        for s in cfg.seed_list:
            rc = cfg.run_config(recipe, s, out / "runs" / run_name(recipe.name, s, cfg.seeds), data_for[s])
            status = read_status(rc.out)["status"] if resume else "missing"
            if status in ("done", "diverged"):
                console.print(f"[dim]{rc.out.name}: already {status}, skipped[/dim]")
                continue
            units.append((rc, inits[s], resume and (rc.out / "checkpoint.pt").is_file()))
    return cfg, units


def lanes(jobs: int | None, runs: int) -> int:
    """How many runs train at once: `jobs` as asked, else two where two cores and two runs allow."""
    if jobs is not None:
        return jobs
    return 2 if default_workers() >= 2 and runs >= 2 else 1


def _run_units(units: list[tuple[TrainConfig, dict, bool]], jobs: int) -> None:
    """Train each unit, in order, or in `jobs` worker processes sharing the cores between them,
    their progress drawn here, one bar per run."""
    if jobs <= 1 or len(units) <= 1:
        for rc, init, res in units:
            _train_unit(rc, init, res)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .progress import relayed_bars

    ctx = get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, default_workers() // jobs)
    for rc, *_ in units:
        console.print(f"[bold]{rc.out.name}[/bold]: {rc.recipe.description or rc.recipe.optimizer}")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads, queue)) as ex:
        futures = [ex.submit(_train_unit, rc, init, res, True) for rc, init, res in units]
        relayed_bars(queue, [rc.out.name for rc, *_ in units], lambda: not all(f.done() for f in futures))
        for f in futures:
            f.result()


def _worker_init(threads: int, queue) -> None:
    from .progress import relay_to

    torch.set_num_threads(threads)
    relay_to(queue)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the comparison's process dies, so a killed comparison
    leaves no orphan still writing into a run folder that `--resume` would train again."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _train_unit(rc: TrainConfig, init: dict, resume: bool, in_worker: bool = False) -> None:
    if in_worker:
        from .progress import relay_to

        relay_to(name=rc.out.name)
    else:
        console.print(f"[bold]{rc.out.name}[/bold]: {rc.recipe.description or rc.recipe.optimizer}")
    try:
        train(rc, init_state=init, resume=resume, dist=distributed.SINGLE)  # a run of its own, even under torchrun
    except Diverged as e:
        console.print(f"[red]{rc.out.name} diverged[/red] ({e}); the other recipes carry on")


def _write_spec(out: Path, cfg: CompareConfig) -> None:
    base = cfg.base
    write_json(out / "compare.json", {
        "data": str(Path(base.data).resolve()), "model": base.model, "epochs": base.epochs, "seed": base.seed,
        "seeds": cfg.seeds, "resplit": cfg.resplit, "budget": cfg.budget, "target": cfg.target,
        "tune_lr": cfg.tune_lr, "jobs": lanes(cfg.jobs, len(cfg.recipes) * cfg.seeds),
        "recipes": [r.to_dict() for r in cfg.recipes],
        "pretrained": base.pretrained, "mode": base.mode if base.pretrained else "",
        "settings": {k: getattr(base, k) for k in ("device", "precision", "channels_last", "hflip", "vflip")},
        "base": base.to_dict(),
    })


def _dataset_for_seed(cfg: CompareConfig, out: Path, seed: int) -> Path:
    """The prepared dataset itself, or with --resplit a copy of its manifest split with this seed."""
    if not cfg.resplit:
        return Path(cfg.base.data)
    from .manifest import MANIFEST_COLUMNS
    from .split import SPLITS, assign_splits

    d = out / "splits" / f"seed{seed}"
    if (d / "manifest.csv").is_file():
        return d
    ds = load_dataset(cfg.base.data)
    frac = ds.info["fractions"]
    splits = assign_splits([r["class"] for r in ds.rows], frac["val"], frac["test"], seed)
    rows = [{**r, "split": s} for r, s in zip(ds.rows, splits)]
    write_csv(d / "manifest.csv", MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in rows))
    counts = {s: {c: sum(1 for r in rows if r["split"] == s and r["class"] == c) for c in ds.classes} for s in SPLITS}
    write_json(d / "dataset.json", {**ds.info, "seed": seed, "counts": counts, "resplit_of": str(ds.root)})
    return d


def _initial_weights(out: Path, base: TrainConfig, seed: int, num_classes: int) -> dict:
    """One random init per seed (pretrained backbone + random head with --pretrained), saved and
    shared by every recipe: within a seed, differences come from the optimizer alone, which is
    what makes the per-seed comparison paired."""
    path = out / f"init-seed{seed}.safetensors"
    if path.is_file():
        return load_file(str(path))
    torch.manual_seed(seed)
    model = create_model(base.model, num_classes)
    if base.pretrained or base.pretrained_path:
        from .pretrained import load_pretrained, weights_file

        load_pretrained(model, weights_file(base.model, base.pretrained_path)[0], get_spec(base.model))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state
