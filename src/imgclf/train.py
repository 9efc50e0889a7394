"""Stage 4: train one model with one recipe, checkpointing every epoch, and write the run folder.

`train()` reads top to bottom: config -> device -> data -> model -> optimizer -> (resume) ->
epochs -> weights, curves, test metrics. Every random stream is seeded from cfg.seed, so on CPU
the same seed gives the same numbers, and a resumed run matches an uninterrupted one. A config
whose model is "auto" is planned first (plan.plan); `TrainConfig.resolve` holds every rule that
turns what a user asked for into a concrete run, for the CLI and the API alike.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .cache import CachedSplit, open_cache
from .device import autocast, environment, keep_freed_memory, pick_device, resolve_precision
from . import distributed
from .distributed import SINGLE, Dist, any_rank, barrier, broadcast, check_batch, in_turn, rank_seed, shard, share, sum_all
from .ema import EMA
from .errors import Diverged, ImgclfError, Interrupted
from .evaluate import evaluate_model, loss_and_predictions, predict_logits
from .files import write_json
from .load import Augment, augment, batches, epoch_size, input_fn, resident
from .manifest import load_dataset
from .models import create_model, get_spec
from .optim import Recipe, build_optimizer, build_scheduler, eval_sizes, param_groups
from .plots import plot_history
from .pretrained import MODES, load_pretrained, setup_probe, weights_file
from .progress import console, default_workers, make_progress
from .recipes import PRESETS, get_recipe, recipe_from_dict, with_overrides
from .runfolder import (CHECKPOINT, load_checkpoint, read_config, save_checkpoint, save_weights, start_run_folder,
                        write_history, write_status)

DEFAULT_MODEL = "fastcnn-s"  # no --model but a fixed length (--epochs, --budget steps, --size): nothing to plan
KEEP = ("last", "best")
BALANCE = ("none", "weights", "sampler")
# What `--balance` means. On a 10:1 Cat:Dog folder (fastcnn-s-p3, 15 epochs, three seeds) the
# class-weighted loss reached a balanced test accuracy of 67.2 / 62.0 / 69.3%, the balanced
# sampler 63.5 / 57.0 / 62.5%, neither 49.5 / 53.3 / 56.2% (BENCHMARKS.md, "Class imbalance").
BALANCE_METHOD = "weights"


@dataclass
class TrainConfig:
    data: Path
    out: Path
    # "auto": planned (plan.plan picks, among every candidate, the one it expects most accurate
    # within max_seconds); with epochs, max_steps or size given and no model, DEFAULT_MODEL.
    model: str = "auto"
    from_scratch: bool = False  # plan among the from-scratch models only (no pretrained candidates)
    # A Recipe, or the name of one (recipes.get_recipe); None: the model's bundled recipe, else adam.
    recipe: Recipe | str | None = None
    epochs: int | None = None  # None: the recipe's own epochs, else 10
    # Overrides of the recipe's settings (None: the recipe's). A pretrained model fine-tuned with no
    # lr given runs at a tenth of the recipe's: ImageNet features are easily wrecked by a from-scratch lr.
    lr: float | None = None
    batch_size: int | None = None
    schedule: str | None = None
    size: int | None = None  # input size in px; None: the model's default
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where the hardware runs it natively, else fp32
    channels_last: bool = True  # NHWC convs: ~2x faster on CPU (oneDNN) and tensor cores
    hflip: bool = True
    vflip: bool = False
    eval_batch_size: int = 256
    workers: int = field(default_factory=default_workers)
    force: bool = False
    report: bool = True  # write report.html at the end (compare writes one for all recipes instead)
    compile: bool = False  # torch.compile the model: for GPUs; on this 2-core CPU it was slower (BENCHMARKS.md)
    pretrained: bool = False  # start from ImageNet weights (the model's spec says where they come from)
    pretrained_path: str | None = None  # any compatible state_dict instead of the package's (implies pretrained)
    mode: str = "finetune"  # with pretrained: "probe" (frozen features + linear head) or "finetune"
    evaluate_test: bool = True  # off for LR tuning, which must only ever look at the val split
    max_steps: int | None = None  # budget in optimizer steps (stops mid-epoch); None: whole epochs
    max_seconds: float | None = None  # budget in training wall time; None: no limit
    # Each epoch trains on a seeded random subset of this many training images, a new one every
    # epoch (the planner's way through folders too big for whole epochs); None: all of them.
    epoch_images: int | None = None
    # Which weights the run keeps: "last" (the schedule's end) or "best" (the epoch with the best
    # validation accuracy). "last" by default: fastcnn's one-cycle schedule ends at lr 0 on its
    # best epoch, and its last validation pass alone sees every test-time view (BENCHMARKS.md,
    # "Keeping the best epoch").
    keep: str = "last"
    patience: int | None = None  # stop after this many epochs without a better val accuracy
    # Class imbalance: "none", or "weights" (cross-entropy weighted by inverse class frequency),
    # or "sampler" (each epoch draws images with probability 1 / their class's count, with
    # replacement). `--balance` picks the one measured best (BENCHMARKS.md, "Class imbalance").
    # True: BALANCE_METHOD, the one measured best.
    balance: str | bool = "none"
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard
    # Under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only). Off:
    # each rank normalises by its own share, as single-GPU training does at that per-rank batch.
    sync_bn: bool = False
    plan: dict | None = None  # how plan.plan chose model, size and epochs (set by it, recorded in config.json)

    def resolve(self) -> "TrainConfig":
        """The config with every rule of `imgclf train` applied, so that the CLI and the API give the
        same run: a raw folder prepared beside the run, the default model, the recipe by name or the
        model's own, the overrides, a tenth of the lr for fine-tuning, the epochs, --no-hflip, the
        balance method. Applying it twice changes nothing."""
        self.validate()
        cfg = self
        model = cfg.model
        if model == "auto" and (cfg.epochs is not None or cfg.max_steps is not None or cfg.size is not None):
            model = DEFAULT_MODEL  # a fixed length asked for: nothing to plan
        if not (Path(cfg.data) / "manifest.csv").is_file():
            from .prepare import ensure_prepared

            out = Path(cfg.out)
            size = None if model == "auto" else get_spec(model).check_size(cfg.size)  # the plan picks it later
            cfg = replace(cfg, data=ensure_prepared(cfg.data, out.parent / f"{out.name}-data", cfg.seed, size))
        if model != "auto" and get_spec(model).parts:  # each part resolves its own recipe (ensemble.py)
            return replace(cfg, model=model)
        recipe = cfg.recipe
        if isinstance(recipe, str):
            recipe = get_recipe(recipe)
        elif recipe is None and model != "auto":
            recipe = get_spec(model).recipe or PRESETS["adam"]
        pretrained = cfg.pretrained or cfg.pretrained_path is not None
        lr = cfg.lr
        if pretrained and cfg.mode == "finetune" and lr is None and recipe is not None:
            lr = recipe.lr / 10
            console.print(f"fine-tuning pretrained weights: lr {lr:.3g} (a tenth of {recipe.name}'s; --lr to change)")
        overrides = {"lr": lr, "batch_size": cfg.batch_size, "schedule": cfg.schedule}
        if recipe is not None:
            recipe = with_overrides(recipe, **overrides)
            if not cfg.hflip and recipe.hflip:  # --no-hflip: the recipe as run (and recorded) has no flips
                recipe = replace(recipe, hflip=False)
        elif any(v is not None for v in overrides.values()):
            raise ImgclfError("--lr, --batch-size and --schedule override a recipe: name a --model (or --optimizer)")
        epochs = cfg.epochs if recipe is None else (recipe.epochs or cfg.epochs or 10)
        balance = {True: BALANCE_METHOD, False: "none"}.get(cfg.balance, cfg.balance)
        return replace(cfg, model=model, recipe=recipe, pretrained=pretrained, lr=lr, epochs=epochs, balance=balance)

    def validate(self) -> "TrainConfig":
        if self.model != "auto":
            get_spec(self.model).check_size(self.size)
        if isinstance(self.recipe, Recipe):
            self.recipe.validate()
        if self.epochs is not None and not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ImgclfError(f"--epochs must be an integer >= 1, got {self.epochs}")
        if self.seed < 0:
            raise ImgclfError(f"--seed must be >= 0, got {self.seed}")
        if self.eval_batch_size < 1:
            raise ImgclfError(f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ImgclfError(f"--budget steps must be >= 1, got {self.max_steps}")
        if self.epoch_images is not None and self.epoch_images < 1:
            raise ImgclfError(f"epoch_images must be >= 1, got {self.epoch_images}")
        if self.from_scratch and (self.pretrained or self.pretrained_path):
            raise ImgclfError("--from-scratch and --pretrained contradict each other: drop one")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ImgclfError(f"--budget seconds must be > 0, got {self.max_seconds}")
        if self.mode not in MODES:
            raise ImgclfError(f"--mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.model != "auto" and get_spec(self.model).parts:
            what = " and ".join(f"{m} ({mode})" for _, m, mode in get_spec(self.model).parts)
            if not self.pretrained or self.pretrained_path or self.mode != "finetune":
                raise ImgclfError(f"--model {self.model} trains {what} from their ImageNet weights: give it "
                                  "--pretrained, without --pretrained-path or --mode")
        if self.mode == "probe" and not (self.pretrained or self.pretrained_path):
            raise ImgclfError("--mode probe trains a head on pretrained features: add --pretrained")
        if self.keep not in KEEP:
            raise ImgclfError(f"--keep must be one of {', '.join(KEEP)}, got '{self.keep}'")
        if self.patience is not None and self.patience < 1:
            raise ImgclfError(f"--patience must be >= 1 epoch, got {self.patience}")
        if self.balance not in (*BALANCE, True, False):
            raise ImgclfError(f"--balance must be one of {', '.join(BALANCE)}, got '{self.balance}'")
        if self.sync_bn and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise ImgclfError("--sync-bn synchronises BatchNorm across processes: use it with --nproc or torchrun")
        if self.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ImgclfError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["recipe"] = self.recipe.to_dict() if isinstance(self.recipe, Recipe) else self.recipe
        return d


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "done" or "diverged"
    history: list[dict]
    metrics: dict | None  # test metrics when done
    seconds: float


def train(cfg: TrainConfig, *, init_state: dict | None = None, resume: bool = False,
          dist: Dist | None = None) -> RunResult:
    """Train and evaluate; returns the result. Raises Diverged (after recording it) on NaN/inf loss.
    `init_state`: starting weights (compare gives every recipe the same); `resume`: continue cfg.out;
    `dist`: this process's place in a torchrun job (default: from the environment; see distributed.py)."""
    cfg = cfg.resolve()
    if cfg.model == "auto":
        raise ImgclfError("a config with model 'auto' is planned first: train(plan(cfg)) picks the model, size "
                          "and epochs that fit its budget")
    if get_spec(cfg.model).parts:  # parts trained one by one, each a run of its own (ensemble.py)
        from .ensemble import train_parts

        return train_parts(cfg, resume, distributed.context() if dist is None else dist)
    keep_freed_memory()  # no page faults on every step's activations (device.py): up to 2x on CPU
    d = distributed.context() if dist is None else dist
    run, recipe, spec = Path(cfg.out), cfg.recipe, get_spec(cfg.model)
    device = distributed.device_for(d, pick_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    ds = distributed.same_dataset(d, load_dataset(cfg.data))
    probe = cfg.mode == "probe"  # frozen pretrained backbone: the head alone trains, on cached features
    size = spec.check_size(cfg.size)
    # Evaluate (val, test, and later predict) at eval_scale x the training size: see Recipe.eval_scale.
    # Extra sizes each evaluated image is also decoded at (Recipe.tta_scales), recorded with the
    # weights so that evaluate and predict see the same views (views.view_sizes).
    eval_size, tta_sizes = eval_sizes(recipe, size, bool(spec.sizes))
    tta_sizes = [] if probe else tta_sizes
    meta = {**spec.meta(eval_size), "classes": ds.classes, "num_classes": len(ds.classes), "tta": recipe.test_mirror,
            "tta_sizes": tta_sizes, "tta_decode": True, "train_size": size}
    if d.main:  # config.json before any slow step: a run killed at any later point resumes
        start_run_folder(run, resume, cfg.force, {**cfg.to_dict(), **({"processes": d.world} if d.active else {})},
                         precision, meta, ds, environment(device))
    barrier(d)

    # --- data --------------------------------------------------------------------------------------
    # Progressive resizing (Recipe.progressive): each epoch's training size is read from a cache of
    # its own; resizing every batch down from the final size's cache cost a third of a 64 px epoch.
    progressive = None if probe else recipe.progressive
    epoch_sizes = [epoch_size(size, e, cfg.epochs, progressive) for e in range(1, cfg.epochs + 1)]
    caches, splits, views = in_turn(d, lambda: open_data(ds, cfg, size, eval_size, tta_sizes, epoch_sizes, device))

    # --- model -------------------------------------------------------------------------------------
    model, weights_sha = build_model(cfg, spec, len(ds.classes), run if d.main else None, init_state, device,
                                     splits["train"].images)
    net = torch.compile(model) if cfg.compile else model  # `model` keeps the plain state_dict keys
    trained = model  # the module whose weights train: all of them, or a probe's head
    to_input = input_fn(device, spec.mean, spec.std, cfg.channels_last)
    aug = Augment(hflip=recipe.hflip, vflip=cfg.vflip, translate=recipe.translate)
    if probe:
        splits, trained, to_input, aug = in_turn(d, lambda: setup_probe(ds, splits, model, spec, weights_sha, device,
                                                                      precision))
        net = trained
    plain = net  # what evaluation runs: never the DDP wrapper, whose forward is a collective
    net = distributed.wrap(net, d, device, cfg.sync_bn)

    # --- optimizer, schedule, random streams ---------------------------------------------------------
    loop, steps_per_epoch = make_loop(cfg, net, trained, splits["train"].labels, len(ds.classes), to_input, aug,
                                      device, precision, d)
    torch.manual_seed(cfg.seed + 2)  # dropout stream, independent of the init above
    history, best = [], {"epoch": 0, "val_acc": -1.0, "state": None}  # best val epoch (--keep best, --patience)
    if resume and broadcast(d, (run / CHECKPOINT).is_file()):  # else: killed before epoch 1 ended, start over
        history, best = restore(broadcast(d, load_checkpoint(run / CHECKPOINT) if d.main else None), model, loop, best)
    writer = None
    if d.main:
        write_status(run, "running", epoch=len(history))
        writer = tensorboard_writer(run, len(history)) if cfg.tensorboard else None

    # --- epochs --------------------------------------------------------------------------------------
    train_splits = {size: splits["train"]}  # by training size; more join as progressive resizing reaches them
    t_start = time.perf_counter() - sum(h["seconds"] for h in history)
    steps_done = int(history[-1].get("steps", 0)) if history else 0
    stopped_early, stopped_by = False, None  # by --budget (steps or seconds); "patience": by --patience
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0, cpu0 = time.perf_counter(), time.process_time()
        budget = Budget(steps=None if cfg.max_steps is None else cfg.max_steps - steps_done,
                        deadline=None if cfg.max_seconds is None else t_start + cfg.max_seconds)
        tr_size = epoch_sizes[epoch - 1]
        if tr_size not in train_splits:
            train_splits[tr_size] = resident(caches[tr_size]["train"], device)
        desc = f"{recipe.name} {epoch}/{cfg.epochs}" + (f" {tr_size}px" if progressive else "")
        try:
            tr_loss, tr_acc, steps = train_epoch(loop, train_splits[tr_size], epoch, desc, budget, steps_done)
        except Diverged as e:
            if d.main:
                write_status(run, "diverged", epoch=e.epoch, step=e.step, message=str(e))
            raise
        except KeyboardInterrupt:
            if d.main:
                write_status(run, "interrupted", epoch=len(history))
            raise Interrupted(f"stopped in epoch {epoch}; {run} holds the checkpoint of epoch {len(history)}: "
                              f"continue with `imgclf train --resume {run}`") from None
        steps_done += steps
        # The extra test-time views double the cost of a validation pass (~6% of a fastcnn epoch), for
        # a curve that only watches progress: they join in the last epoch, whose val_acc is then the
        # saved model's.
        last = epoch == cfg.epochs or budget.spent
        # Rank 0 validates (every val image once) and tells the others, so stopping rules agree.
        val_loss, val_acc = broadcast(d, validate(
            loop.ema.module if loop.ema else plain, splits["val"], views["val"] if last else [], loop,
            cfg.eval_batch_size, recipe.test_mirror) if d.main else None)
        history.append({"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": val_loss,
                        "val_acc": val_acc, "lr": loop.optimizer.param_groups[0]["lr"],
                        "seconds": round(time.perf_counter() - t0, 3), "steps": steps_done,
                        # CPU seconds of every thread of this process: what the epoch cost, whatever else
                        # shared the cores (compare --jobs runs recipes side by side)
                        "cpu_seconds": round(time.process_time() - cpu0, 3)})
        if val_acc > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": val_acc, "state": copy.deepcopy(
                (loop.ema.module if loop.ema else trained).state_dict()) if cfg.keep == "best" else None}
        if d.main:
            write_history(run, history)
            if writer is not None:
                log_scalars(writer, history[-1])
            save_checkpoint(run, checkpoint(model, loop, history, best))
        if cfg.patience is not None and epoch - best["epoch"] >= cfg.patience and epoch < cfg.epochs:
            console.print(f"no better val accuracy for {cfg.patience} epochs (best {best['val_acc']:.2%}, epoch "
                          f"{best['epoch']}): training stops here (--patience)")
            stopped_by = "patience"
            break
        if budget.spent:
            stopped_early = epoch < cfg.epochs or steps < steps_per_epoch
            if stopped_early:
                console.print(f"budget reached in epoch {epoch} of {cfg.epochs}: training stops here")
            break

    # --- weights, curves, test metrics -----------------------------------------------------------------
    if writer is not None:
        writer.close()
    meta["epoch_kept"] = keep_weights(trained, loop.ema, best, cfg.keep, len(history))
    if not d.main:  # rank 0 writes the weights, evaluates on the test split and reports
        return RunResult(run, "done", history, share(d, None), time.perf_counter() - t_start)
    save_weights(run, model, meta)
    plot_history(history, "loss", run / "loss.png", f"{recipe.name}: loss")
    plot_history(history, "acc", run / "accuracy.png", f"{recipe.name}: accuracy")
    metrics = None
    if cfg.evaluate_test:
        metrics = evaluate_model(plain, meta, splits["test"], "test", run, device, precision, cfg.channels_last,
                                 cfg.eval_batch_size, to_input=to_input, views=views["test"])
    seconds = time.perf_counter() - t_start
    write_status(run, "done", epoch=len(history), seconds=round(seconds, 3), stopped_by_budget=stopped_early,
                 **({"stopped_by": stopped_by} if stopped_by else {}),
                 **({"best_epoch": best["epoch"]} if cfg.keep == "best" or cfg.patience else {}))
    if cfg.report and cfg.evaluate_test:
        from .report import build_report

        build_report(run)
    return RunResult(run, "done", history, share(d, metrics), seconds)


# --- the steps of train(), in its order -----------------------------------------------------------------


def open_data(ds, cfg: TrainConfig, size: int, eval_size: int, tta_sizes: list[int], epoch_sizes: list[int], device):
    """(caches by size, the splits at their sizes, the val/test views at the extra sizes), on the
    device (GPU: whole splits in device memory)."""
    caches = {s: open_cache(ds, s, workers=cfg.workers) for s in sorted({size, eval_size, *tta_sizes, *epoch_sizes})}
    splits = {**caches[eval_size], "train": caches[size]["train"]}
    if len(splits["train"]) == 0:
        raise ImgclfError(f"{cfg.data} has no training images; re-run prepare with smaller --val/--test")
    splits = {k: resident(v, device) for k, v in splits.items()}
    views = {k: [resident(caches[s][k], device) for s in tta_sizes] for k in ("val", "test")}
    return caches, splits, views


def build_model(cfg: TrainConfig, spec, num_classes: int, run: Path | None, init_state: dict | None, device,
                train_images):
    """The model, seeded, with its pretrained weights (recorded in pretrained.json) or the shared
    `init_state`, then its data-dependent init from the training images if it has one (after
    `init_state`, which compare draws at random), on the device: (model, sha256 of the pretrained
    weights or ""). A resumed run's checkpoint replaces all of it."""
    torch.manual_seed(cfg.seed)  # model init stream
    model = create_model(cfg.model, num_classes)
    weights_sha = ""
    if cfg.pretrained:
        path, weights_sha = weights_file(cfg.model, cfg.pretrained_path)
        loaded = load_pretrained(model, path, spec)
        if run is not None:  # rank 0's to record
            write_json(run / "pretrained.json", {**loaded, "sha256": weights_sha})
    if init_state is not None:
        model.load_state_dict(init_state)  # compare: every recipe starts from the same weights
    if spec.init_from_data is not None and not cfg.pretrained:
        spec.init_from_data(model, train_images)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return model.to(device, memory_format=fmt), weights_sha


def make_loop(cfg: TrainConfig, net, trained, labels: np.ndarray, num_classes: int, to_input, aug, device,
              precision: str, d: Dist = SINGLE) -> tuple["Loop", int]:
    """The optimizer, schedule, loss, EMA and random streams of a run: (loop, steps per epoch)."""
    recipe = cfg.recipe
    n_train = min(len(labels), cfg.epoch_images or len(labels))
    drop_last = recipe.drop_last and n_train >= recipe.batch_size  # never drop the only batch
    steps_per_epoch = n_train // recipe.batch_size if drop_last else math.ceil(n_train / recipe.batch_size)
    if d.active:  # each rank takes its share of every global batch; a last batch smaller than the world drops
        check_batch(recipe.batch_size, d, recipe.name)
        steps_per_epoch -= int(not drop_last and 0 < n_train % recipe.batch_size < d.world)
    total_steps = min(steps_per_epoch * cfg.epochs, cfg.max_steps or math.inf)
    optimizer = build_optimizer(recipe, param_groups(recipe, net))
    counts = np.bincount(labels, minlength=num_classes)
    loop = Loop(
        net=net, optimizer=optimizer, scheduler=build_scheduler(optimizer, recipe, total_steps),
        loss_fn=nn.CrossEntropyLoss(weight=class_weights(counts).to(device) if cfg.balance == "weights" else None,
                                    label_smoothing=recipe.label_smoothing),
        to_input=to_input, aug=aug, device=device, precision=precision, batch_size=recipe.batch_size,
        drop_last=drop_last, ema=EMA(trained, recipe.ema) if recipe.ema else None,
        order_gen=torch.Generator().manual_seed(cfg.seed),  # data order
        aug_gen=torch.Generator().manual_seed(cfg.seed + 1),  # flips and shifts
        # Alternating flips: each training image's side in odd epochs, from a stream of its own (never
        # saved: a resumed run draws the same sides again).
        sides=(torch.rand(len(labels), generator=torch.Generator().manual_seed(cfg.seed + 3)) < 0.5
               if aug.hflip and recipe.alternate_flips else None),
        draw=(balanced_draw(labels, counts, n_train) if cfg.balance == "sampler"
              else subset_draw(len(labels), n_train) if n_train < len(labels) else None),
        dist=d, seed=cfg.seed,
    )
    return loop, steps_per_epoch


def validate(model, split: CachedSplit, views: list, loop: "Loop", batch_size: int, mirror: bool) -> tuple[float, float]:
    """(val loss, val accuracy) of `model` on the val split, with the given test-time views."""
    logits = predict_logits(model, split, loop.to_input, loop.device, loop.precision, batch_size, tta=mirror,
                            views=views)
    loss, probs, _ = loss_and_predictions(logits, split.labels)
    return loss, float((probs.argmax(1) == split.labels).mean()) if len(probs) else float("nan")


def keep_weights(trained, ema: EMA | None, best: dict, keep: str, epochs: int) -> int:
    """Load the weights the run keeps into `trained`: the EMA's if any, or the best epoch's with
    --keep best. Returns the epoch they are from."""
    if ema is not None:  # the averaged weights are the result
        trained.load_state_dict(ema.state_dict())
    if keep == "best" and best["state"] is not None:
        if best["epoch"] != epochs:
            trained.load_state_dict(best["state"])
            console.print(f"keeping epoch {best['epoch']}'s weights (val accuracy {best['val_acc']:.2%}; --keep best)")
        return best["epoch"]
    return epochs


# --- the training loop's parts ---------------------------------------------------------------------------


@dataclass
class Loop:
    """What every training step needs, fixed for the whole run."""

    net: nn.Module  # what trains: the model (maybe compiled), or a probe's head
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    to_input: Callable  # uint8 NHWC batch -> normalised model input on the device
    aug: Augment
    device: torch.device
    precision: str
    batch_size: int
    drop_last: bool
    ema: EMA | None
    order_gen: torch.Generator  # each epoch's permutation
    aug_gen: torch.Generator  # flips and shifts
    sides: torch.Tensor | None  # alternating flips: which images are mirrored in odd epochs
    draw: Callable | None  # the balanced sampler: generator -> this epoch's image order
    dist: Dist = SINGLE  # under torchrun: this rank's share of each global batch (distributed.py)
    seed: int = 0


@dataclass
class Budget:
    """What is left of a step or time budget for this epoch; `spent` once either runs out."""

    steps: int | None = None
    deadline: float | None = None
    spent: bool = False

    def exhausted(self, steps_this_epoch: int) -> bool:
        if self.steps is not None and steps_this_epoch >= self.steps:
            self.spent = True
        elif self.deadline is not None and time.perf_counter() >= self.deadline:
            self.spent = True
        return self.spent


def train_epoch(loop: Loop, split: CachedSplit, epoch: int, desc: str, budget: Budget,
                steps_before: int) -> tuple[float, float, int]:
    """One pass over the training split (or until the budget runs out): (loss, accuracy, steps).

    Loss/accuracy sums stay on the device until the bar refreshes, so batch-size-1 SGD is not
    slowed by a host sync per step; that sync is also the divergence check."""
    loop.net.train()
    device, d = loop.device, loop.dist
    batch_size, drop_last, aug_gen = loop.batch_size, loop.drop_last, loop.aug_gen
    order = loop.draw(loop.order_gen) if loop.draw is not None else None
    if d.active:  # the global order every rank draws alike, then this rank's share of each batch
        order = order if order is not None else torch.randperm(len(split), generator=loop.order_gen)
        order, global_sizes = shard(order, batch_size, d, drop_last)
        batch_size, drop_last = batch_size // d.world, False
        # Per-rank streams derived from (seed, epoch, rank): nothing rank-specific to checkpoint.
        aug_gen = torch.Generator().manual_seed(rank_seed(loop.seed, epoch, d))
        torch.manual_seed(rank_seed(loop.seed + 2, epoch, d))  # dropout
    total = len(split) if order is None else len(order)  # len(order): this rank's share, or an epoch's draw
    n = total if d.active or not drop_last else total - total % batch_size
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, step, last_ui = 0, 0, 0.0
    with make_progress("img", "loss {task.fields[loss]} acc {task.fields[acc]}") as bar:
        task = bar.add_task(desc, total=n, loss="-", acc="-")
        for x, y, rows in batches(split, batch_size, shuffle=True, generator=loop.order_gen,
                                  pin=device.type == "cuda", drop_last=drop_last, with_index=True, order=order):
            if loop.aug.active:
                x = augment(x, loop.aug, aug_gen,
                            None if loop.sides is None else loop.sides[rows] ^ (epoch % 2 == 0))
            xb, yb = loop.to_input(x), y.to(device, non_blocking=True)
            with autocast(device, loop.precision):
                logits = loop.net(xb)
            loss = loop.loss_fn(logits.float(), yb)
            loop.optimizer.zero_grad(set_to_none=True)
            if d.active:  # DDP averages the ranks' gradients: weigh each by its share of the global batch,
                # so that the step is the single process's mean over that batch (an uneven last batch too)
                (loss * (len(y) * d.world / global_sizes[step])).backward()
            else:
                loss.backward()
            loop.optimizer.step()
            loop.scheduler.step()
            step += 1
            if loop.ema is not None:
                loop.ema.update(steps_before + step)
            seen += len(y)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == yb).sum()
            now = time.perf_counter()
            stop = budget.exhausted(step)
            if d.active and budget.deadline is not None:  # a clock may run out on one rank first
                stop = budget.spent = any_rank(d, stop)
            # The refresh syncs with the device and checks for divergence: on a time cadence alone,
            # or under torchrun on a step cadence, so that every rank checks (and stops) at one step.
            if (step % 16 == 0 if d.active else now - last_ui > 0.25) or seen == n or stop:
                last_ui = now
                total = float(loss_sum)
                if not math.isfinite(total):
                    raise Diverged(f"loss became {total} at epoch {epoch}, step {step}", epoch, step)
                bar.update(task, completed=seen, loss=f"{total / seen:.4f}", acc=f"{int(correct) / seen:.2%}")
            if stop:
                break
    total, right, seen = sum_all(d, float(loss_sum), int(correct), seen)  # over every rank's share
    return total / seen, right / seen, step


def checkpoint(model: nn.Module, loop: Loop, history: list[dict], best: dict) -> dict:
    """Everything a resumed run needs to continue exactly where this epoch ended."""
    return {"epoch": len(history), "model": model.state_dict(), "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict(), "history": history,
            "rng": {"order": loop.order_gen.get_state(), "aug": loop.aug_gen.get_state(),
                    "torch": torch.get_rng_state()},
            **({"ema": loop.ema.state_dict()} if loop.ema is not None else {}), "best": best}


def restore(state: dict, model: nn.Module, loop: Loop, best: dict) -> tuple[list[dict], dict]:
    """Load a checkpoint into the model, the loop and the random streams: (history, best)."""
    model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.order_gen.set_state(state["rng"]["order"])
    loop.aug_gen.set_state(state["rng"]["aug"])
    if loop.ema is not None:
        loop.ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"]["torch"])
    return list(state["history"]), state.get("best", best)


def tensorboard_writer(run: Path, epochs_done: int):
    """A live view: `tensorboard --logdir RUN/tensorboard` (a resumed run drops the epochs it redoes)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run / "tensorboard"), purge_step=epochs_done + 1)


def log_scalars(writer, h: dict) -> None:
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        writer.add_scalar(k, h[k], h["epoch"])
    writer.flush()


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse class frequency, mean 1 over the classes present (an absent class weighs 0)."""
    c = torch.tensor(counts, dtype=torch.float32)
    w = torch.where(c > 0, c.sum() / (c.clamp(min=1) * (c > 0).sum()), torch.zeros_like(c))
    return w


def balanced_draw(labels: np.ndarray, counts: np.ndarray, n: int):
    """f(generator) -> n indices drawn with replacement, each with probability 1 / its class's
    count: every class is drawn equally often on average."""
    p = torch.from_numpy(1.0 / counts[labels]).double()
    return lambda gen: torch.multinomial(p, n, replacement=True, generator=gen)


def subset_draw(n_train: int, n: int):
    """f(generator) -> n of the n_train training images, a new seeded subset each epoch."""
    return lambda gen: torch.randperm(n_train, generator=gen)[:n]


def config_from_run(run: Path | str) -> TrainConfig:
    """The TrainConfig a run was started with (for --resume)."""
    d = dict(read_config(run))
    known = {f for f in TrainConfig.__dataclass_fields__}
    kw = {k: v for k, v in d.items() if k in known}
    kw["recipe"] = recipe_from_dict(kw["recipe"]) if kw.get("recipe") else None
    kw["data"], kw["out"] = Path(kw["data"]), Path(run)
    return TrainConfig(**kw)
