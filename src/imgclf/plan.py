"""Pick the model, input size and epochs that make the best use of a time budget on this machine.

`imgclf train DATA` with no --model lands here: `plan(cfg)` turns a config whose model is "auto"
into a concrete one that `train()` runs. The run's budget (default DEFAULT_SECONDS) covers
everything from the command's start to its test metrics: what has already gone (auto-prepare),
building the decoded cache, a short speed probe, training, and evaluation.

The rule, from the ablations in docs/experiments.md ("Exploration: architecture, size, epochs"): a bigger
model at a bigger size wins once it gets enough epochs to converge, and loses when it does not.
So walk the ladder below from the most expensive rung down and take the first that fits at
least its minimum epochs; give it as many epochs as fit, up to MAX_EPOCHS (past that the
one-cycle schedule gains nothing measurable). When no rung affords its minimum (a large folder
or a short budget), the cheapest rung trains for the epochs that do fit; only a budget short of
one epoch of it is refused, with the budget that would do. Throughput is measured here, on this machine, not assumed,
so the same rule picks big on a GPU and small on a laptop; a rung that even an optimistic
estimate puts out of reach is not probed (probes spend the budget too).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
import torch.nn as nn

from . import distributed
from .cache import cache_dir, open_cache
from .device import autocast, pick_device, resolve_precision
from .errors import ImgclfError
from .files import check_out_dir
from .manifest import load_dataset
from .models import create_model, get_spec
from .optim import build_optimizer, eval_sizes, param_groups
from .progress import console

DEFAULT_SECONDS = 300.0  # `imgclf train DATA` with no --budget: five minutes
# (model, size, minimum epochs worth running), most expensive first. Measured on fastcnn-s
# (docs/experiments.md, "Exploration"): 96 px for 15 epochs (88.6%) lost to 64 px for 30 epochs (89.7%) in
# about the same time, 64 px saturates near 90.4% by 40 epochs, 80 px for 30 epochs reached
# 92.1%, and 160 px for 36 epochs 95.0%, where the wider fastcnn-m at 128 px for 35 epochs, at a
# higher cost per epoch, reached 93.5%: input size buys more than width. So a bigger rung must
# afford 25-30 epochs before it is worth taking (measured with SGD; with Muon the 120 px rung
# below needs fewer, and the upper rungs' 30 is untested). Rates here (2-core EPYC, bf16, batch 128, malloc
# keeping freed memory): s@64 ~1,300 img/s, s@80 ~850, s@96 ~570, s@160 ~220. At half that speed
# (the same machine, shared: s@64 ~620, s@128 ~155, s@160 ~89) 30 minutes no longer afford 160 px,
# and without the 128 px rung the plan fell to 96 px, capped at 40 epochs with 40% of the budget idle.
LADDER = [
    ("fastcnn-s", 160, 30),
    ("fastcnn-s", 128, 30),
    ("fastcnn-s", 96, 30),
    # The patch-3 stem at 120 px costs what the 2x2 stem does at 80 px (a 40x40 grid after it) and
    # beat it by +0.2 / +0.4 test points at 31-32 epochs (SGD, two seeds). With Muon a bigger size
    # pays with fewer epochs than SGD needed: 13 / 16 epochs here beat 22 / 25 at 96 px in the same
    # seconds (+0.2, +0.5, +0.9 test, three pairs), so this rung asks for 12.
    ("fastcnn-s-p3", 120, 12),
    # The cheapest rung, where a budget affords few pixels: the patch-3 stem at 96 px costs what the
    # 2x2 stem does at 64 px (the same 32x32 grid after it): +0.5 test points in the same seconds.
    ("fastcnn-s-p3", 96, 8),
]
MAX_EPOCHS = 40
# Plan for 93% of what is left: epochs ran 0.98-1.07x the estimate at 64 px and 1.07-1.08x on the
# patch-3 rung (its loader moves 2.25x the bytes the probe does not time); the hard stop catches the rest.
SAFETY = 0.93
EVAL_SPEEDUP = 3.0  # inference (no backward pass, no optimizer) runs ~3x the training img/s
CACHE_RATE = 2500.0  # img/s to budget for a cache build when choosing a rung (measured 2,600-12,600 on 2 cores)
# After the test pass: weights, curves, predictions, confusion matrix, report.html and the process
# exit, measured at 4-5 s on 2 cores. Without it a run whose epochs ran slower than planned could
# hit the hard stop and still end a few seconds past the budget (302 s of 300, once).
TAIL_SECONDS = 6.0


def measure_rate(model_name: str, size: int, recipe, device, precision: str, seconds: float = 1.0,
                 d: distributed.Dist = distributed.SINGLE) -> float:
    """Training images per second of one model at one size with the recipe's batch size and
    optimizer (Muon's orthogonalisation costs ~10% of a step): two warm-up steps, then `seconds` of
    steps. With `d` (every rank calling): the ranks together, each on its share of the batch,
    gradients all-reduced as in training."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = create_model(model_name, 2).to(device, memory_format=fmt).train()
    net = distributed.wrap(model, d, device, sync_bn=False)
    opt = build_optimizer(recipe, param_groups(recipe, net))
    b = distributed.check_batch(recipe.batch_size, d, recipe.name)
    x = torch.randn(b, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (b,), device=device)

    def step():
        with autocast(device, precision):
            loss = nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while not distributed.any_rank(d, time.perf_counter() - t0 >= seconds):  # every rank stops at one step
        step()
        n += 1
    _sync(device)
    return n * recipe.batch_size / (time.perf_counter() - t0)


def _cache_sizes(recipe, size: int) -> set[int]:
    """The sizes a run at `size` trains and evaluates at, each a decoded cache."""
    eval_size, more = eval_sizes(recipe, size)
    return {size, eval_size, *more}


def _same_family(a: str, b: str) -> bool:
    """Two models alike but for the stem (ModelSpec.family), so their rates scale with the grid."""
    return get_spec(a).family != "" and get_spec(a).family == get_spec(b).family


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan(cfg, t_begin: float | None = None):
    """A config whose model is "auto" -> the same config with model, size, epochs, recipe and a
    hard stop filled in, the plan recorded in `cfg.plan`; any other config comes back resolved.
    The budget (cfg.max_seconds, default DEFAULT_SECONDS) counts from `t_begin` (a perf_counter
    time; the CLI passes its own start, so that auto-prepare counts too), else from now."""
    t_begin = time.perf_counter() if t_begin is None else t_begin
    d = distributed.context()
    if not d.active:
        return _plan(cfg, t_begin)
    # Under torchrun: rank 0 resolves (prepares a raw folder), the ranks measure how much faster
    # they train together than rank 0 alone, rank 0 plans with its rates scaled by that, and every
    # rank runs the plan. (On one 2-core CPU the ranks share the cores; on N GPUs they do not.)
    cfg = distributed.share(d, cfg.resolve() if d.main else None)
    if cfg.model != "auto":
        return cfg
    speedup = _ranks_speedup(cfg, d)
    return distributed.share(d, _plan(cfg, t_begin, d.world, speedup) if d.main else None)


def _ranks_speedup(cfg, d) -> float:
    """The ranks' training rate together over rank 0's alone, on the cheapest rung."""
    name, size, _ = LADDER[-1]
    recipe = cfg.recipe or get_spec(name).recipe
    device = distributed.device_for(d, pick_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    alone = measure_rate(name, size, recipe, device, precision) if d.main else None
    distributed.barrier(d)
    together = measure_rate(name, size, recipe, device, precision, d=d)
    return distributed.broadcast(d, together / alone if d.main else None)


def _plan(cfg, t_begin: float, processes: int = 1, speedup: float = 1.0):
    cfg = cfg.resolve()
    if cfg.model != "auto":
        return cfg
    check_out_dir(cfg.out, cfg.force, "run")  # before the probes spend the budget
    device = pick_device(cfg.device)
    cfg, record = plan_run(cfg, load_dataset(cfg.data), device, resolve_precision(cfg.precision, device), t_begin,
                           speedup)
    if processes > 1:
        record = {**record, "processes": processes, "speedup_of_processes": round(speedup, 3)}
    return replace(cfg, plan=record)


def plan_run(cfg, ds, device, precision: str, t_begin: float, speedup: float = 1.0):
    """Return (cfg with model, size, epochs, recipe and max_seconds filled in, plan as a dict).

    Probes cost budget (a 1 s probe at 160 px took 6 s with its warm-up), so the cheapest rung is
    measured first, and a rung whose stages are the same widths is estimated from it (rate ~ 1 /
    the pixels of the grid after the stem: 208 vs 221 img/s measured at 160 px, 832 vs 850 at 80;
    fastcnn-s-p3 at 96 px 666 img/s, fastcnn-s at 64 px 687) and only probed if it comes within 20% of
    its minimum epochs. Epochs are counted once the caches exist, from the time really left.
    """
    budget = cfg.max_seconds or DEFAULT_SECONDS
    n_train, n_val, n_test = (len(ds.split_rows(s)) for s in ("train", "val", "test"))
    ref_name, ref_size, _ = LADDER[-1]
    ref_rate = speedup * measure_rate(ref_name, ref_size, cfg.recipe or get_spec(ref_name).recipe, device, precision)
    rows = []
    choice = None

    def costs(recipe, size, rate):  # seconds per epoch (train + val pass) and for the test pass
        flips = 2 if recipe.test_mirror else 1
        eval_size, more = eval_sizes(recipe, size)

        def view_s(s):  # one image, one view at s px: inference ~EVAL_SPEEDUP x the training rate, per pixel
            return flips * (s / size) ** 2 / (rate * EVAL_SPEEDUP)

        extra_s = sum(map(view_s, more))  # the extra views join the last val pass and the test pass (train.py)
        return n_train / rate + n_val * view_s(eval_size), n_test * (view_s(eval_size) + extra_s) + n_val * extra_s

    for name, size, min_epochs in LADDER:
        recipe = cfg.recipe or get_spec(name).recipe
        if not cfg.hflip:  # --no-hflip: no mirror view to pay for at evaluation
            recipe = replace(recipe, hflip=False)
        left = budget - (time.perf_counter() - t_begin)
        cache_s = sum(len(ds.rows) / CACHE_RATE for s in _cache_sizes(recipe, size) if not cache_dir(ds, s).is_dir())

        def fit(rate):
            epoch_s, test_s = costs(recipe, size, rate)
            return math.floor((SAFETY * left - cache_s - test_s - TAIL_SECONDS) / epoch_s)

        if (name, size) == (ref_name, ref_size):
            rate, how = ref_rate, "measured"
        elif _same_family(name, ref_name) and fit(
                est := ref_rate * get_spec(ref_name).grid(ref_size) / get_spec(name).grid(size)) < 0.8 * min_epochs:
            rate, how = est, "estimated"  # out of reach even so: no probe
        else:
            rate, how = speedup * measure_rate(name, size, recipe, device, precision), "measured"
        fits = fit(rate)
        rows.append({"model": name, "size": size, "train_img_per_s": round(rate, 1), "rate": how,
                     "epochs_fit": fits})
        if how == "measured" and fits >= min_epochs:
            choice = (name, size, recipe, rate)
            break
    if choice is None and fits >= 1:  # no rung affords its minimum: the cheapest, for what fits
        choice = (name, size, recipe, rate)
    elif choice is None:  # not one epoch of the cheapest rung: say what budget would do
        epoch_s, test_s = costs(recipe, size, rate)
        need = time.perf_counter() - t_begin + (cache_s + test_s + TAIL_SECONDS + epoch_s) / SAFETY
        raise ImgclfError(
            f"--budget seconds={budget:g} is too short for {len(ds.rows)} images on this machine: one epoch of "
            f"{name} at {size}px ({rate:.0f} img/s), its caches and the test pass need about {math.ceil(need)} s; "
            f"give it --budget seconds={math.ceil(need)} or more, or name a model and --epochs"
        )
    name, size, recipe, rate = choice
    for s in _cache_sizes(recipe, size):  # build them now: what is left is then known
        open_cache(ds, s, workers=cfg.workers)
    left = budget - (time.perf_counter() - t_begin)
    epoch_s, test_s = costs(recipe, size, rate)
    epochs = max(1, min(MAX_EPOCHS, math.floor((SAFETY * left - test_s - TAIL_SECONDS) / epoch_s)))
    train_s = epochs * epoch_s
    # Hard stop: what is left minus the test pass and the tail; the plan aims well inside it.
    hard_stop = max(1.0, left - test_s - TAIL_SECONDS)
    plan = {"budget_seconds": budget, "chosen": {"model": name, "size": size, "epochs": epochs},
            "expected_train_seconds": round(train_s, 1), "seconds_left_at_plan": round(left, 1),
            "measured": rows, "reference": {"model": ref_name, "size": ref_size, "train_img_per_s": round(ref_rate, 1)},
            "rule": "largest rung of LADDER that fits its minimum epochs (imgclf.plan)"}
    console.print(
        f"budget {budget:.0f} s: training [bold]{name}[/bold] at {size} px for {epochs} epochs "
        f"(~{train_s:.0f} s at {rate:.0f} img/s measured; "
        f"same run without the budget: --model {name} --size {size} --epochs {epochs})",
        highlight=False, soft_wrap=True,
    )
    return replace(cfg, model=name, size=size, epochs=epochs, recipe=recipe, max_seconds=hard_stop), plan
