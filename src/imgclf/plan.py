"""Pick the model, input size and epochs that make the best use of a time budget on this machine.

`imgclf train DATA` with no --model lands here: `plan(cfg)` turns a config whose model is "auto"
into a concrete one that `train()` runs. The run's budget (default DEFAULT_SECONDS) covers
everything from the command's start to its test metrics: what has already gone (auto-prepare),
building the decoded cache, a short speed probe, training, and evaluation.

Four kinds of candidate, ranked by the accuracy measured for them at this folder's size and
budget (expected.py reads it from expected_accuracy.csv): a linear probe on frozen ImageNet
features (PROBES), a whole pretrained network fine-tuned for the epochs that fit (FINETUNES), a
probe and a fine-tune averaged (ENSEMBLES, ensemble.py), all when their weights packages are
installed and --from-scratch is not given, and the from-scratch ladder below. The most accurate
candidate expected that fits the budget wins; what was weighed is printed and recorded in the
run's config.json.

The from-scratch rule, from the ablations in docs/experiments.md ("Exploration: architecture, size, epochs"): a bigger
model at a bigger size wins once it gets enough epochs to converge, and loses when it does not.
So walk the ladder below from the most expensive rung down and take the first that fits at
least its minimum epochs; give it as many epochs as fit, up to MAX_IMAGES_SEEN (past that the
one-cycle schedule gains nothing measurable), at a batch small enough for a small folder to take
real steps. When no rung affords its minimum (a large folder or a short budget), the cheapest
rung trains on a seeded subset of the images each epoch, to the last second that fits, with fewer
test-time views if even one pass would not fit with all; only a budget short of one pass over the
folder is refused, with the budget that would do. Throughput is measured here, on this machine, not assumed,
so the same rule picks big on a GPU and small on a laptop; a rung that even an optimistic
estimate puts out of reach is not probed (probes spend the budget too).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import statistics
import time
from dataclasses import replace

import torch
import torch.nn as nn

from . import distributed
from .cache import cache_dir, open_cache
from .decode import decode_image, read_file
from .device import autocast, keep_freed_memory, pick_device, resolve_precision
from .errors import ImgclfError
from .expected import expected_accuracy
from .files import check_out_dir
from .manifest import load_dataset
from .models import create_model, get_spec
from .optim import build_optimizer, eval_sizes, param_groups
from .progress import console
from .recipes import get_recipe, with_overrides

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
    # The whitened patch-3 stem at 192 px sees this rung's 64x64 grid for the same seconds: +0.06 /
    # -0.17 test at 13 epochs (two pairs), where it gained at the 32-40 px grids below. Not taken.
    ("fastcnn-s", 128, 30),
    ("fastcnn-s", 96, 30),
    # The patch-3 stem at 120 px costs what the 2x2 stem does at 80 px (a 40x40 grid after it) and
    # beat it by +0.2 / +0.4 test points at 31-32 epochs (SGD, two seeds). With Muon a bigger size
    # pays with fewer epochs than SGD needed: 13 / 16 epochs here beat 22 / 25 at 96 px in the same
    # seconds (+0.2, +0.5, +0.9 test, three pairs). Its stem whitened from the training images and
    # frozen (-p3w) gained test points in all six pairs at 13 and 26 epochs, +0.17 to +0.87
    # (docs/experiments.md, "The whitened stem with BN"), at the same cost. -p3w at 11 epochs here
    # against 17 at 96 px, the same seconds: +0.10, +0.84, +0.71, +0.03 test (four pairs), so 11.
    # One size up does not pay: 144 px for 8 epochs scored -0.23 test on average against it (four pairs).
    ("fastcnn-s-p3w", 120, 11),
    # The cheapest rung, where a budget affords few pixels: the patch-3 stem at 96 px costs what the
    # 2x2 stem does at 64 px (the same 32x32 grid after it): +0.5 test points in the same seconds.
    # Whitened here too: +0.97 / +0.57 test at 8 epochs (two pairs).
    ("fastcnn-s-p3w", 96, 8),
]
# Past 40 epochs of the 6,297 training images of PetImages the one-cycle schedule gains nothing
# measurable: the cap is that many images seen (a small folder gets more epochs of its own).
MAX_EPOCHS = 40
MAX_IMAGES_SEEN = 40 * 6297
# A small folder at the recipe's batch of 128 takes 2-3 optimizer steps an epoch (600 images: 378
# to train on, 2 full batches), too few for the schedule's warm-up to mean anything: its first
# epochs were unstable (train loss 6-8) and it scored 72.2%. The batch halves, down to MIN_BATCH,
# until an epoch has MIN_STEPS steps.
MIN_STEPS = 16
MIN_BATCH = 16
# Linear probes on frozen ImageNet features (pretrained.py), in the recipe measured for
# expected_accuracy.csv; training the head on cached features and its evaluation took 1-3 s on 10k.
PROBES = ("efficientnet-lite0+1", "efficientnet-lite2", "efficientnet-lite1", "efficientnet-lite0")
PROBE_SETTINGS = dict(recipe="adam", epochs=10, batch_size=64)


def probe_args(name: str, recipe: str = PROBE_SETTINGS["recipe"]) -> list[str]:
    """The `imgclf train` flags of a probe run as the plan makes it (also what the benchmarks run)."""
    return ["--model", name, "--pretrained", "--mode", "probe", "--optimizer", recipe,
            "--epochs", str(PROBE_SETTINGS["epochs"]), "--batch-size", str(PROBE_SETTINGS["batch_size"])]


# Fine-tuning the whole pretrained network: the candidate for budgets long enough for several
# epochs of it, where a probe would end in ~100 s whatever the budget. Lite0 at 224 px trains
# ~17 img/s here (an epoch of 10k's 6,297 training images: 355-377 s with its validation pass).
# Adam at 3e-4 with batch 32, the setting of the 1-epoch fine-tune measured first (98.40%; not
# searched further), one-cycle over the epochs. The table's row is 4 epochs (what 1,800 s afford
# on 10k: 98.77%, below the Lite1 probe's 98.90%), so it is weighed from 4 epochs on.
FINETUNES = ("efficientnet-lite0",)
# The probe and a fine-tune side by side, probabilities averaged (models/efficientnet_lite.py,
# LiteEnsemble): where a budget affords the probe plus FINETUNE_MIN_EPOCHS of fine-tuning, the
# two together err less than either (99.37 / 99.23% against the probe's 99.13 / 99.10% on the
# seed 0 / 1 splits of 10k), and the fine-tune's epochs grow with the budget instead of the probe
# ending it in 2-3 minutes.
ENSEMBLES = ("efficientnet-lite-ensemble",)
FINETUNE_SETTINGS = dict(recipe="adam", lr=3e-4, schedule="onecycle", batch_size=32)
FINETUNE_MIN_EPOCHS = 4


def finetune_recipe():
    s = FINETUNE_SETTINGS
    return with_overrides(get_recipe(s["recipe"]), lr=s["lr"], schedule=s["schedule"], batch_size=s["batch_size"])


def ensemble_args(name: str, epochs: int) -> list[str]:
    """The `imgclf train` flags of an ensemble as the plan makes it (also what the benchmarks run)."""
    return ["--model", name, "--pretrained", "--epochs", str(epochs)]


def finetune_args(name: str, epochs: int) -> list[str]:
    """The `imgclf train` flags of a fine-tune as the plan makes it (also what the benchmarks run)."""
    s = FINETUNE_SETTINGS
    return ["--model", name, "--pretrained", "--optimizer", s["recipe"], "--lr", str(s["lr"]), "--schedule",
            s["schedule"], "--batch-size", str(s["batch_size"]), "--epochs", str(epochs)]


PROBE_HEAD_SECONDS = 5.0
# The probes' figures are of photographs (PetImages at 180 px, upsampled to the backbone's 224-260).
# On the demo's 32 px digits a Lite2 probe scored 73.1% where fastcnn from scratch reached 99.3%:
# ImageNet features of a 7x-upsampled glyph are not what the table measured. Below this median
# shorter side the probes are not weighed; between 32 and 180 px nothing was measured.
PROBE_MIN_SIDE = 64
SCRATCH = "from scratch"  # the ladder's name in expected_accuracy.csv
# Plan for 93% of what is left: epochs ran 0.98-1.07x the estimate at 64 px and 1.07-1.08x on the
# patch-3 rung (its loader moves 2.25x the bytes the probe does not time); the hard stop catches the rest.
SAFETY = 0.93
EVAL_SPEEDUP = 3.0  # inference (no backward pass, no optimizer) runs ~3x the training img/s
# A cache build's speed is measured on the folder itself: CACHE_SAMPLE of its files decoded at
# the size, the rate times the build's workers x CACHE_POOL (2 workers ran 1.8x one). It ranges
# from ~2,500 img/s (500 px originals) to ~10,000 (the 180 px PetImages copies) on 2 cores: a
# fixed guess left 75 s of 300 unused at 25,000 images, or refused a folder of 100,000.
CACHE_SAMPLE = 24
CACHE_POOL = 0.9
# Where even the cheapest rung cannot afford one pass, its test-time views go, cheapest gain
# first, before the budget is refused: the extra sizes (tta_scales, +0.3 points, 3 of 6 views),
# then the mirror (+1.1 points, half of what is left). At 100,000 images six views of the 30,000
# test images cost more than a training pass.
LIGHTER_VIEWS = ({"tta_scales": ()}, {"tta_scales": (), "tta": False})
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


def _views(recipe, size: int) -> int:
    """How many views of each test image the recipe evaluates (sizes x mirror)."""
    return (1 + len(eval_sizes(recipe, size)[1])) * (2 if recipe.test_mirror else 1)


def cache_seconds(ds, sizes, workers: int) -> float:
    """Seconds to build the decoded caches at `sizes` that do not exist yet, at the measured rate."""
    return sum(len(ds.rows) / _cache_rate(ds, s, workers) for s in sizes if not cache_dir(ds, s).is_dir())


_CACHE_RATES: dict[tuple[str, int, int], float] = {}  # (manifest, size, workers) -> img/s


def _cache_rate(ds, size: int, workers: int) -> float:
    """measure_cache_rate, once per dataset and size: the rungs and their lighter views share sizes."""
    key = (ds.manifest_sha256, size, workers)
    if key not in _CACHE_RATES:
        _CACHE_RATES[key] = measure_cache_rate(ds, size, workers)
    return _CACHE_RATES[key]


def measure_cache_rate(ds, size: int, workers: int) -> float:
    """Images per second a cache build at `size` runs at: a seeded sample of the folder's files read,
    hashed and decoded here (what each build worker does), scaled to the workers."""
    rows = random.Random(0).sample(ds.rows, min(CACHE_SAMPLE, len(ds.rows)))
    t0 = time.perf_counter()
    for r in rows:
        data = read_file(r["path"])
        hashlib.sha256(data).digest()
        decode_image(data, size)
    per_worker = len(rows) / max(time.perf_counter() - t0, 1e-6)
    return per_worker * min(workers, os.cpu_count() or 1) * CACHE_POOL


def _same_family(a: str, b: str) -> bool:
    """Two models alike but for the stem (ModelSpec.family), so their rates scale with the grid."""
    return get_spec(a).family != "" and get_spec(a).family == get_spec(b).family


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_seconds(recipe, size: int, rate: float, n_train: int, n_val: int, n_test: int) -> tuple[float, float]:
    """(seconds of an epoch: its training and validation passes, seconds of the test pass) for a
    model training `rate` img/s at `size` px under the recipe's test-time views."""
    flips = 2 if recipe.test_mirror else 1
    eval_size, more = eval_sizes(recipe, size)

    def view_s(s):  # one image, one view at s px: inference ~EVAL_SPEEDUP x the training rate, per pixel
        return flips * (s / size) ** 2 / (rate * EVAL_SPEEDUP)

    extra_s = sum(map(view_s, more))  # the extra views join the last val pass and the test pass (train.py)
    return n_train / rate + n_val * view_s(eval_size), n_test * (view_s(eval_size) + extra_s) + n_val * extra_s


def plan(cfg, t_begin: float | None = None):
    """A config whose model is "auto" -> the same config with model, size, epochs, recipe and a
    hard stop filled in, the plan recorded in `cfg.plan`; any other config comes back resolved.
    The budget (cfg.max_seconds, default DEFAULT_SECONDS) counts from `t_begin` (a perf_counter
    time; the CLI passes its own start, so that auto-prepare counts too), else from now."""
    t_begin = time.perf_counter() if t_begin is None else t_begin
    # The speed probes measure the process as train() will run it: with malloc keeping freed
    # memory, the Lite0+1 pair's features ran 66 img/s instead of 40, Lite0's fine-tune 18.8
    # instead of 17.0; without it a probe's estimate was 1.6x its real seconds (246 s for 154).
    keep_freed_memory()
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
                           speedup, processes)
    if processes > 1:
        record = {**record, "processes": processes, "speedup_of_processes": round(speedup, 3)}
    return replace(cfg, plan=record)


def plan_run(cfg, ds, device, precision: str, t_begin: float, speedup: float = 1.0, processes: int = 1):
    """Return (cfg with model, size, epochs, recipe and max_seconds filled in, plan as a dict).

    The pretrained candidates come first: ranked by the accuracy expected of them here, the first
    whose measured cost fits wins if it is expected to beat training from scratch. Else the ladder.
    The plan's `summary` (what was picked and why) and `flags` (the same run without a plan) are
    printed and recorded."""
    budget = cfg.max_seconds or DEFAULT_SECONDS
    scratch = expected_accuracy(SCRATCH, len(ds.rows), budget)
    weighed = [{"candidate": SCRATCH, "expected_accuracy": scratch and round(scratch[0], 4),
                "expected_from": scratch and scratch[1]}]
    pick = None
    if cfg.from_scratch:
        weighed[0]["note"] = "--from-scratch: the only candidate"
    elif processes > 1:
        weighed[0]["note"] = "under torchrun: the only candidate (the pretrained ones are measured in one process)"
    else:
        pick, rows = plan_pretrained(cfg, ds, device, precision, t_begin, budget, scratch)
        weighed = rows + weighed
    if pick is None:
        cfg, record = plan_scratch(cfg, ds, device, precision, t_begin, speedup)
    elif pick["kind"] == "probe":
        cfg, record = _probe_config(cfg, pick, budget, t_begin, scratch)
    elif pick["kind"] == "probe+fine-tune":
        cfg, record = _ensemble_config(cfg, ds, pick, budget, t_begin, scratch)
    else:
        cfg, record = _finetune_config(cfg, ds, pick, budget, t_begin, scratch)
    record = {**record, "candidates": weighed, "rule": "the candidate expected most accurate that fits (imgclf.plan)"}
    console.print(f"budget {budget:.0f} s: {record['summary']} (same run without the budget: {record['flags']}"
                  + ("" if cfg.from_scratch or pick is None else "; --from-scratch for no pretrained weights")
                  + ")", highlight=False, soft_wrap=True)
    return cfg, record


def _versus(scratch) -> str:
    return "never measured" if scratch is None else f"{scratch[0]:.1%}"


def _probe_config(cfg, pick: dict, budget: float, t_begin: float, scratch):
    name = pick["model"]
    left = budget - (time.perf_counter() - t_begin)
    settings = {**PROBE_SETTINGS, "recipe": cfg.recipe or PROBE_SETTINGS["recipe"]}  # --optimizer stays
    cfg = replace(cfg, model=name, pretrained=True, mode="probe", max_seconds=max(1.0, left - TAIL_SECONDS),
                  **settings).resolve()
    record = {"budget_seconds": budget, "chosen": {"model": name, "mode": "probe", **settings,
                                                  "recipe": cfg.recipe.name},
              "summary": f"{name} linear probe on frozen ImageNet features, expected {pick['expected'][0]:.1%} "
                         f"({pick['expected'][1]}; from scratch: {_versus(scratch)}), ~{pick['need']:.0f} s",
              "flags": " ".join(probe_args(name, cfg.recipe.name))}
    return cfg, record


def _finetune_config(cfg, ds, pick: dict, budget: float, t_begin: float, scratch):
    """The fine-tune for as many epochs as the time left affords (at least FINETUNE_MIN_EPOCHS,
    which the pick was checked to fit), its cache built first so that what is left is known."""
    name, rate, recipe = pick["model"], pick["rate"], pick["recipe"]
    size = get_spec(name).input_size
    open_cache(ds, size, workers=cfg.workers)
    n_train, n_val, n_test = (len(ds.split_rows(s)) for s in ("train", "val", "test"))
    epoch_s, test_s = pass_seconds(recipe, size, rate, n_train, n_val, n_test)
    left = budget - (time.perf_counter() - t_begin)
    epochs = max(1, min(MAX_EPOCHS, math.floor((SAFETY * left - test_s - TAIL_SECONDS) / epoch_s)))
    # --optimizer, --lr, --schedule or --batch-size given: they stay
    settings = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in FINETUNE_SETTINGS.items()}
    cfg = replace(cfg, model=name, pretrained=True, mode="finetune", epochs=epochs,
                  max_seconds=max(1.0, left - test_s - TAIL_SECONDS), **settings).resolve()
    record = {"budget_seconds": budget, "chosen": {"model": name, "mode": "finetune", "epochs": epochs,
                                                  **settings, "recipe": cfg.recipe.name},
              "expected_train_seconds": round(epochs * epoch_s, 1), "seconds_left_at_plan": round(left, 1),
              "summary": f"{name} fine-tuned from ImageNet weights for {epochs} epochs, expected "
                         f"{pick['expected'][0]:.1%} ({pick['expected'][1]}; from scratch: {_versus(scratch)}), "
                         f"~{epochs * epoch_s:.0f} s of training at {rate:.0f} img/s measured",
              "flags": " ".join(finetune_args(name, epochs))}
    return cfg, record


def _ensemble_config(cfg, ds, pick: dict, budget: float, t_begin: float, scratch):
    """The ensemble with its fine-tuned part trained for as many epochs as the time left affords
    once the caches exist: whole epochs, or where FINETUNE_MIN_EPOCHS whole ones fit the time left
    but not SAFETY of it, that many epochs of a seeded subset of the images each (split_epochs)."""
    name, epoch_s, train_s, test_s = pick["model"], pick["epoch_s"], pick["train_s"], pick["test_s"]
    for size in pick["sizes"]:
        open_cache(ds, size, workers=cfg.workers)
    left = budget - (time.perf_counter() - t_begin)
    rest = pick["probe_s"] + test_s + TAIL_SECONDS  # the probe parts, the test pass, the tail
    n_train = len(ds.split_rows("train"))
    batch = cfg.batch_size or FINETUNE_SETTINGS["batch_size"]
    epochs, images = split_epochs(SAFETY * left - rest, epoch_s, train_s, n_train, FINETUNE_MIN_EPOCHS, batch)
    subset = images < n_train
    tuned_s = epochs * (epoch_s - train_s * (n_train - images) / n_train)
    cfg = replace(cfg, model=name, pretrained=True, mode="finetune", epochs=epochs,
                  epoch_images=images if subset else None, max_seconds=max(1.0, left - test_s - TAIL_SECONDS)).resolve()
    parts = " and ".join(f"{m} ({mode})" for _, m, mode in get_spec(name).parts)
    each = f" of {images:,} of the {n_train:,} training images each" if subset else ""
    record = {"budget_seconds": budget,
              "chosen": {"model": name, "epochs": epochs, "epoch_images": images if subset else None, "parts": parts},
              "expected_train_seconds": round(pick["probe_s"] + tuned_s, 1), "seconds_left_at_plan": round(left, 1),
              "summary": f"{name}: {parts} for {epochs} epochs{each}, probabilities averaged, expected "
                         f"{pick['expected'][0]:.1%} ({pick['expected'][1]}; from scratch: {_versus(scratch)}), "
                         f"~{pick['probe_s'] + tuned_s:.0f} s of training",
              "flags": " ".join(ensemble_args(name, epochs) + (["--epoch-images", str(images)] if subset else []))}
    return cfg, record


def plan_pretrained(cfg, ds, device, precision: str, t_begin: float, budget: float, scratch):
    """(the pretrained candidate to run or None, what was weighed). A candidate is weighed when its
    weights are installed and the table has measured it (a fine-tune, at this budget or a shorter
    one); ranked by that expectation, the first whose measured cost fits is picked. A probe's cost:
    the cache at its size, its backbone's speed over every image (the features), the head and the
    tail; a fine-tune's: the cache, FINETUNE_MIN_EPOCHS epochs at its measured training rate, the
    test pass and the tail; an ensemble's: its parts' (each measured) and its own test pass."""
    ranked, rows = [], []
    side = statistics.median(min(int(r["width"]), int(r["height"])) for r in ds.rows)
    kinds = [(n, "probe+fine-tune") for n in ENSEMBLES] + [(n, "fine-tune") for n in FINETUNES] + [
        (n, "probe") for n in PROBES]
    for name, kind in kinds:
        exp = expected_accuracy(f"{name} {kind}", len(ds.rows), None if kind == "probe" else budget)
        row = {"candidate": f"{name} {kind}", "expected_accuracy": exp and round(exp[0], 4),
               "expected_from": exp and exp[1]}
        rows.append(row)
        try:
            get_spec(name).weights()
        except ImgclfError as e:
            row["note"] = f"weights not installed ({e})"
            continue
        if exp is None:
            row["note"] = "never measured (expected_accuracy.csv)" + (" at this budget or a shorter one"
                                                                      if kind != "probe" else "")
        elif side < PROBE_MIN_SIDE:
            row["note"] = (f"images of {side:g} px (median shorter side): the pretrained candidates were measured "
                           f"on photographs of 180 px, and lost to from scratch on 32 px digits")
        elif scratch is not None and exp[0] <= scratch[0]:
            row["note"] = "expected no better than from scratch"
        else:
            ranked.append((exp, name, kind, row))
    n_train, n_val, n_test = (len(ds.split_rows(s)) for s in ("train", "val", "test"))
    measured = {}  # (what, model) -> img/s: an ensemble's parts are candidates of their own too

    def features_rate(name, whole=False):
        if ("features", name, whole) not in measured:
            measured["features", name, whole] = measure_features_rate(name, get_spec(name).input_size, device,
                                                                      precision, whole=whole)
        return measured["features", name, whole]

    def train_rate(name):
        if ("train", name) not in measured:
            measured["train", name] = measure_rate(name, get_spec(name).input_size, finetune_recipe(), device,
                                                   precision)
        return measured["train", name]

    for exp, name, kind, row in sorted(ranked, key=lambda r: -r[0][0]):
        spec = get_spec(name)
        cache_s = cache_seconds(ds, [spec.input_size], cfg.workers)
        pick = {"model": name, "kind": kind, "expected": exp}
        if kind == "probe":
            rate = features_rate(name)
            need = cache_s + len(ds.rows) / rate + PROBE_HEAD_SECONDS + TAIL_SECONDS
            row["features_img_per_s"] = round(rate, 1)
        elif kind == "fine-tune":
            recipe = finetune_recipe()
            rate = train_rate(name)
            epoch_s, test_s = pass_seconds(recipe, spec.input_size, rate, n_train, n_val, n_test)
            need = cache_s + FINETUNE_MIN_EPOCHS * epoch_s + test_s + TAIL_SECONDS
            row["train_img_per_s"] = round(rate, 1)
            pick.update(rate=rate, recipe=recipe)
        else:  # an ensemble: each probe part over every image, each fine-tuned part's epochs and test pass
            sizes = sorted({spec.input_size, *(get_spec(m).input_size for _, m, _ in spec.parts)})
            cache_s = cache_seconds(ds, sizes, cfg.workers)
            probe_s = sum(len(ds.rows) / features_rate(m) + PROBE_HEAD_SECONDS
                          for _, m, mode in spec.parts if mode == "probe")
            tuned = [m for _, m, mode in spec.parts if mode == "finetune"]
            epoch_s = sum(pass_seconds(finetune_recipe(), get_spec(m).input_size, train_rate(m), n_train, n_val,
                                       n_test)[0] for m in tuned)
            train_s = sum(n_train / train_rate(m) for m in tuned)  # the epoch's training passes alone
            # the test pass: the fine-tuned parts on the test images, the probe parts' features being cached
            test_s = sum(n_test / features_rate(m, whole=True) for m in tuned)
            need = cache_s + probe_s + FINETUNE_MIN_EPOCHS * epoch_s + test_s + TAIL_SECONDS
            pick.update(sizes=sizes, probe_s=probe_s, epoch_s=epoch_s, train_s=train_s, test_s=test_s)
            row.update({f"{m} {'features' if mode == 'probe' else 'train'}_img_per_s": round(
                features_rate(m) if mode == "probe" else train_rate(m), 1) for _, m, mode in spec.parts})
        left = budget - (time.perf_counter() - t_begin)
        row["estimated_seconds"] = round(need, 1)
        # An ensemble whose minimum fits what is left is sized into SAFETY of it by the images its
        # fine-tune's epochs see (_ensemble_config), as the ladder's cheapest rung is.
        if need > (1.0 if kind == "probe+fine-tune" else SAFETY) * left:
            row["note"] = f"needs ~{need:.0f} s, {left:.0f} s left"
            continue
        row["note"] = "picked"
        for *_, other in ranked:
            other.setdefault("note", f"expected less accurate than {name} {kind}")
        return {**pick, "need": need}, rows
    return None, rows


@torch.no_grad()
def measure_features_rate(name: str, size: int, device, precision: str, batch: int = 32,
                          whole: bool = False) -> float:
    """Images per second through a model's frozen, BN-folded backbone, as the probe extracts them
    (random weights run as fast), or with `whole` through the whole model as evaluation runs it:
    one warm-up batch, then two timed."""
    spec = get_spec(name)
    model = create_model(name, 2).eval()
    model = (spec.fold(model) if spec.fold and not whole else model).to(device, memory_format=torch.channels_last)
    run = model if whole else model.features
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        run(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(2):
            run(x)
        _sync(device)
    return 2 * batch / (time.perf_counter() - t0)


def plan_scratch(cfg, ds, device, precision: str, t_begin: float, speedup: float = 1.0):
    """The from-scratch ladder: (cfg with model, size, epochs, recipe, batch and max_seconds filled
    in, plan as a dict).

    Probes cost budget (a 1 s probe at 160 px took 6 s with its warm-up), so the cheapest rung is
    measured first, and a rung whose stages are the same widths is estimated from it (rate ~ 1 /
    the pixels of the grid after the stem: 208 vs 221 img/s measured at 160 px, 832 vs 850 at 80;
    fastcnn-s-p3 at 96 px 666 img/s, fastcnn-s at 64 px 687) and only probed if it comes within 20% of
    its minimum epochs, and probed once more if it reads short of them. Epochs are counted once the
    caches exist, from the time really left.
    """
    budget = cfg.max_seconds or DEFAULT_SECONDS
    n_train, n_val, n_test = (len(ds.split_rows(s)) for s in ("train", "val", "test"))
    ref_name, ref_size, _ = LADDER[-1]
    ref_recipe = rung_recipe(cfg, ref_name, n_train)
    ref_rate = speedup * measure_rate(ref_name, ref_size, ref_recipe, device, precision)
    rows = []
    choice, fewer = None, False  # fewer: the cheapest rung's test-time views cut to fit (LIGHTER_VIEWS)

    def costs(recipe, size, rate):
        return pass_seconds(recipe, size, rate, n_train, n_val, n_test)

    for name, size, min_epochs in LADDER:
        recipe = rung_recipe(cfg, name, n_train)
        if not cfg.hflip:  # --no-hflip: no mirror view to pay for at evaluation
            recipe = replace(recipe, hflip=False)
        left = budget - (time.perf_counter() - t_begin)
        cache_s = cache_seconds(ds, _cache_sizes(recipe, size), cfg.workers)

        def fit(rate):
            epoch_s, test_s = costs(recipe, size, rate)
            return math.floor((SAFETY * left - cache_s - test_s - TAIL_SECONDS) / epoch_s)

        est = (ref_rate * get_spec(ref_name).grid(ref_size) / get_spec(name).grid(size)
               if _same_family(name, ref_name) else None)
        if (name, size) == (ref_name, ref_size):
            rate, how = ref_rate, "measured"
        elif est is not None and fit(est) < 0.8 * min_epochs:
            rate, how = est, "estimated"  # out of reach even so: no probe
        else:
            rate, how = speedup * measure_rate(name, size, recipe, device, precision), "measured"
            if est is not None and fit(rate) < min_epochs:
                # Short, but its estimate was close enough to probe: ask once more, keep the faster. On
                # the shared host the 1 s probe of fastcnn-s-p3w at 120 px read 229-230 img/s in two of
                # eleven plans on the same folder (every step ~1.5x slower), 342-392 in the other nine;
                # at ~325 the 5-minute plan takes that rung (its 11 epochs) or falls to 96 px. A probe
                # costs ~2 s.
                rate, how = max(rate, speedup * measure_rate(name, size, recipe, device, precision)), "measured twice"
        fits = fit(rate)
        if (name, size) == (ref_name, ref_size):  # the cheapest rung: fewer test-time views before a refusal
            for lighter in LIGHTER_VIEWS if fits < 1 else ():
                recipe, fewer = replace(recipe, **lighter), True
                cache_s = cache_seconds(ds, _cache_sizes(recipe, size), cfg.workers)
                if (fits := fit(rate)) >= 1:
                    break
        rows.append({"model": name, "size": size, "train_img_per_s": round(rate, 1), "rate": how,
                     "epochs_fit": fits, "test_views": _views(recipe, size)})
        if how != "estimated" and fits >= min_epochs:
            choice = (name, size, recipe, rate, min_epochs)
            break
    if choice is None and fits >= 1:  # no rung affords its minimum: the cheapest, for what fits
        choice = (name, size, recipe, rate, min_epochs)
    elif choice is None:  # not one pass of the cheapest rung: say what budget would do
        epoch_s, test_s = costs(recipe, size, rate)
        need = time.perf_counter() - t_begin + (cache_s + test_s + TAIL_SECONDS + epoch_s) / SAFETY
        raise ImgclfError(
            f"--budget seconds={budget:g} is too short for {len(ds.rows)} images on this machine: one pass of "
            f"{name} at {size}px ({rate:.0f} img/s), its caches and the test pass need about {math.ceil(need)} s; "
            f"give it --budget seconds={math.ceil(need)} or more, or name a model and --epochs"
        )
    name, size, recipe, rate, min_epochs = choice
    for s in _cache_sizes(recipe, size):  # build them now: what is left is then known
        open_cache(ds, s, workers=cfg.workers)
    left = budget - (time.perf_counter() - t_begin)
    epoch_s, test_s = costs(recipe, size, rate)
    epochs, images = split_epochs(SAFETY * left - test_s - TAIL_SECONDS, epoch_s, n_train / rate, n_train,
                                  min_epochs, recipe.batch_size)
    train_s = epochs * (epoch_s - (n_train - images) / rate)
    # Hard stop: what is left minus the test pass and the tail; the plan aims well inside it.
    hard_stop = max(1.0, left - test_s - TAIL_SECONDS)
    subset = images < n_train
    plan = {"budget_seconds": budget,
            "chosen": {"model": name, "size": size, "epochs": epochs, "batch_size": recipe.batch_size,
                       "epoch_images": images if subset else None,
                       # fewer images seen than the rung's minimum epochs: the budget, not the rule, set it
                       "short_of_minimum": epochs * images < min_epochs * n_train, "minimum_epochs": min_epochs},
            "expected_train_seconds": round(train_s, 1), "seconds_left_at_plan": round(left, 1),
            "measured": rows, "reference": {"model": ref_name, "size": ref_size, "train_img_per_s": round(ref_rate, 1)},
            "ladder": "largest rung that fits its minimum epochs"}
    each = f" of {images:,} of the {n_train:,} training images each" if subset else ""
    plan["summary"] = (f"{name} from scratch at {size} px for {epochs} epoch{'s' if epochs > 1 else ''}{each}, "
                       f"batch {recipe.batch_size}"
                       + (f", {_views(recipe, size)} test-time views (more would not fit)" if fewer else "")
                       + f" (~{train_s:.0f} s at {rate:.0f} img/s measured)")
    plan["flags"] = (f"--model {name} --size {size} --epochs {epochs} --batch-size {recipe.batch_size}"
                     + (f" --epoch-images {images}" if subset else "")
                     + (", with the recipe's fewer test-time views from config.json in a --recipes file" if fewer else ""))
    return replace(cfg, model=name, size=size, epochs=epochs, recipe=recipe, max_seconds=hard_stop,
                   epoch_images=images if subset else None), plan


def rung_recipe(cfg, name: str, n_train: int):
    """The recipe a rung trains with on a folder of n_train training images: the one named in cfg
    or the model's own, at the batch small_folder_batch gives the folder."""
    return small_folder_batch(cfg.recipe or get_spec(name).recipe, n_train)


def small_folder_batch(recipe, n_train: int):
    """The recipe with its batch halved (down to MIN_BATCH) until an epoch has MIN_STEPS steps."""
    batch = recipe.batch_size
    while batch // 2 >= MIN_BATCH and n_train // batch < MIN_STEPS:
        batch //= 2
    return recipe if batch == recipe.batch_size else replace(recipe, batch_size=batch)


def split_epochs(seconds: float, epoch_s: float, train_s: float, n_train: int, min_epochs: int,
                 batch: int) -> tuple[int, int]:
    """(epochs, training images per epoch) that fill `seconds`, an epoch costing `epoch_s` of which
    `train_s` trains on all `n_train` images (the rest: its validation pass).

    Whole epochs, as many as fit up to the cap of MAX_IMAGES_SEEN, when the rung's minimum fits.
    Else fewer epochs of a subset each, so that no second is left for want of a whole epoch: as
    many as min_epochs while the validation passes stay within a tenth of the time (at 100,000
    images one pass takes 8 s), each on the share of the images the rest affords."""
    if seconds >= min_epochs * epoch_s:
        cap = max(MAX_EPOCHS, MAX_IMAGES_SEEN // n_train)
        return max(1, min(cap, math.floor(seconds / epoch_s))), n_train
    val_s = epoch_s - train_s
    epochs = max(1, min(min_epochs, math.floor(0.1 * seconds / val_s) if val_s > 0 else min_epochs))
    images = math.floor((seconds / epochs - val_s) / train_s * n_train)
    return epochs, max(batch, min(n_train, images))
