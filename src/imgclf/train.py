"""Stage 4: train one model with one recipe, checkpointing every epoch, and write the run folder.

Reads top to bottom: config -> device -> data -> model -> optimizer -> (resume) -> epochs ->
weights, curves, test metrics. Every random stream is seeded from cfg.seed, so on CPU the
same seed gives the same numbers, and a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .cache import CachedSplit, open_cache
from .device import autocast, environment, keep_freed_memory, pick_device, resolve_precision
from .errors import Diverged, ImgclfError, Interrupted
from .evaluate import compute_metrics, loss_and_predictions, predict_logits, save_predictions, view_sizes
from .files import prepare_out_dir, write_csv, write_json
from .load import Augment, augment, batches, epoch_size, input_fn, resident
from .manifest import load_dataset
from .models import create_model, get_spec
from .plots import plot_confusion, plot_history
from .progress import console, default_workers, make_progress
from .recipes import PRESETS, Recipe, build_optimizer, eval_sizes, param_groups, recipe_from_dict
from .runfolder import load_checkpoint, read_config, save_checkpoint, save_weights, sweep_temp_files, write_status

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "steps"]


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
    model: str = "auto"  # "auto": the fastcnn variant, size and epochs that fit max_seconds (see plan.py)
    recipe: Recipe | None = None  # None: the model's bundled recipe, else the adam preset
    epochs: int = 10
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
    pretrained: bool = False  # start from ImageNet weights (efficientnet-lite0; see pretrained.py)
    pretrained_path: str | None = None  # any compatible state_dict instead of the package's
    mode: str = "finetune"  # with pretrained: "probe" (frozen features + linear head) or "finetune"
    evaluate_test: bool = True  # off for LR tuning, which must only ever look at the val split
    max_steps: int | None = None  # budget in optimizer steps (stops mid-epoch); None: whole epochs
    max_seconds: float | None = None  # budget in training wall time; None: no limit
    # Which weights the run keeps: "last" (the schedule's end) or "best" (the epoch with the best
    # validation accuracy). "last" by default: fastcnn's one-cycle schedule ends at lr 0 on its
    # best epoch, and its last validation pass alone sees every test-time view (BENCHMARKS.md,
    # "Keeping the best epoch").
    keep: str = "last"
    patience: int | None = None  # stop after this many epochs without a better val accuracy
    # Class imbalance: "none", or "weights" (cross-entropy weighted by inverse class frequency),
    # or "sampler" (each epoch draws images with probability 1 / their class's count, with
    # replacement). `--balance` picks the one measured best (BENCHMARKS.md, "Class imbalance").
    balance: str = "none"
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard

    def validate(self) -> "TrainConfig":
        if self.model != "auto":
            spec = get_spec(self.model)
            spec.check_size(self.size)
            if self.recipe is None:
                self.recipe = spec.recipe or PRESETS["adam"]
        if self.recipe is not None:
            self.recipe.validate()
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ImgclfError(f"--epochs must be an integer >= 1, got {self.epochs}")
        if self.seed < 0:
            raise ImgclfError(f"--seed must be >= 0, got {self.seed}")
        if self.eval_batch_size < 1:
            raise ImgclfError(f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ImgclfError(f"--budget steps must be >= 1, got {self.max_steps}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ImgclfError(f"--budget seconds must be > 0, got {self.max_seconds}")
        from .pretrained import MODES

        if self.mode not in MODES:
            raise ImgclfError(f"--mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.mode == "probe" and not self.pretrained:
            raise ImgclfError("--mode probe trains a head on pretrained features: add --pretrained")
        if self.keep not in KEEP:
            raise ImgclfError(f"--keep must be one of {', '.join(KEEP)}, got '{self.keep}'")
        if self.patience is not None and self.patience < 1:
            raise ImgclfError(f"--patience must be >= 1 epoch, got {self.patience}")
        if self.balance not in BALANCE:
            raise ImgclfError(f"--balance must be one of {', '.join(BALANCE)}, got '{self.balance}'")
        if self.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ImgclfError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["recipe"] = self.recipe.to_dict() if self.recipe else None
        return d


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "done" or "diverged"
    history: list[dict]
    metrics: dict | None  # test metrics when done
    seconds: float


def train(cfg: TrainConfig, *, init_state: dict | None = None, resume: bool = False) -> RunResult:
    """Train and evaluate; returns the result. Raises Diverged (after recording it) on NaN/inf loss."""
    t_begin = time.perf_counter()
    cfg.validate()
    keep_freed_memory()  # no page faults on every step's activations (device.py): up to 2x on CPU
    run = Path(cfg.out)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    ds = load_dataset(cfg.data)
    if not resume:
        prepare_out_dir(run, cfg.force, "run")
    plan = None
    if cfg.model == "auto":  # measure, then pick the model, size and epochs that fit the budget
        from .plan import plan_run

        cfg, plan = plan_run(cfg, ds, device, precision, t_begin)
    if not cfg.hflip and cfg.recipe.hflip:  # --no-hflip: the recipe as run (and recorded) has no flips
        cfg = replace(cfg, recipe=replace(cfg.recipe, hflip=False))
    recipe = cfg.recipe
    spec = get_spec(cfg.model)
    size = spec.check_size(cfg.size)
    # Evaluate (val, test, and later predict) at eval_scale x the training size: see Recipe.eval_scale.
    # Extra sizes each evaluated image is also decoded at (Recipe.tta_scales), recorded with the
    # weights so that evaluate and predict see the same views (evaluate.view_sizes).
    eval_size, tta_sizes = eval_sizes(recipe, size, bool(spec.sizes))
    if cfg.mode == "probe":
        tta_sizes = []
    meta = {**spec.meta(eval_size), "classes": ds.classes, "num_classes": len(ds.classes), "tta": recipe.test_mirror,
            "tta_sizes": tta_sizes, "tta_decode": True, "train_size": size}
    if resume:
        sweep_temp_files(run)
    else:
        # Written before any slow step: with config.json in place, a run killed at any later point resumes.
        write_json(run / "config.json", {
            **cfg.to_dict(), "precision_resolved": precision, "model_meta": meta, "plan": plan,
            "dataset": {"root": str(Path(cfg.data).resolve()), "manifest_sha256": ds.manifest_sha256,
                        "counts": {s: len(ds.split_rows(s)) for s in ("train", "val", "test")}},
            "environment": environment(device),
        })

    # --- data and model ------------------------------------------------------------------------
    # Progressive resizing (Recipe.progressive): each epoch's training size is read from a cache of
    # its own; resizing every batch down from the final size's cache cost a third of a 64 px epoch.
    progressive = recipe.progressive if cfg.mode != "probe" else None
    epoch_sizes = [epoch_size(size, e, cfg.epochs, progressive) for e in range(1, cfg.epochs + 1)]
    caches = {s: open_cache(ds, s, workers=cfg.workers) for s in sorted({size, eval_size, *tta_sizes, *epoch_sizes})}
    splits = {**caches[eval_size], "train": caches[size]["train"]}
    if len(splits["train"]) == 0:
        raise ImgclfError(f"{cfg.data} has no training images; re-run prepare with smaller --val/--test")
    splits = {k: resident(v, device) for k, v in splits.items()}  # GPU: whole splits in device memory
    # The test-time views' images, the same val and test rows at the extra sizes
    views = {k: [resident(caches[s][k], device) for s in tta_sizes] for k in ("val", "test")}

    torch.manual_seed(cfg.seed)  # model init stream
    model = create_model(cfg.model, len(ds.classes))
    weights_sha = ""
    if cfg.pretrained:
        from .pretrained import load_pretrained, weights_file

        path, weights_sha = weights_file(cfg.model, cfg.pretrained_path)
        write_json(run / "pretrained.json", {**load_pretrained(model, path), "sha256": weights_sha})
    if init_state is not None:
        model.load_state_dict(init_state)  # compare: every recipe starts from the same weights
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    net = torch.compile(model) if cfg.compile else model  # `model` keeps the plain state_dict keys
    to_input = input_fn(device, spec.mean, spec.std, cfg.channels_last)
    aug = Augment(hflip=recipe.hflip, vflip=cfg.vflip, translate=recipe.translate)
    if cfg.mode == "probe":  # frozen backbone: train the linear head on features extracted once
        from .pretrained import feature_input, open_features

        splits = open_features(ds, splits, model, cfg.model, weights_sha, device, precision, spec.mean, spec.std)
        net, to_input, aug = model._fc, feature_input(device), Augment(hflip=False, vflip=False)

    # --- optimizer and schedule --------------------------------------------------------------
    optimizer = build_optimizer(recipe, param_groups(recipe, net))
    # EMA: a second copy of the weights, averaged over steps, is what gets evaluated and saved.
    trained = model._fc if cfg.mode == "probe" else model
    ema_net = copy.deepcopy(trained).requires_grad_(False) if recipe.ema else None
    n_train = len(splits["train"])
    drop_last = recipe.drop_last and n_train >= recipe.batch_size  # never drop the only batch
    steps_per_epoch = n_train // recipe.batch_size if drop_last else math.ceil(n_train / recipe.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = _scheduler(optimizer, recipe.schedule, total_steps, recipe.warmup)
    order_gen = torch.Generator().manual_seed(cfg.seed)  # data order
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)  # flips
    # Alternating flips: each training image's side in odd epochs, drawn from a stream of its own
    # (never saved: a resumed run draws the same sides again).
    sides = None
    if aug.hflip and recipe.alternate_flips:
        sides = torch.rand(n_train, generator=torch.Generator().manual_seed(cfg.seed + 3)) < 0.5
    torch.manual_seed(cfg.seed + 2)  # dropout stream, independent of the init above
    history: list[dict] = []
    best = {"epoch": 0, "val_acc": -1.0, "state": None}  # the best validation epoch (--keep best, --patience)
    class_counts = np.bincount(splits["train"].labels, minlength=len(ds.classes))
    draw = balanced_draw(splits["train"].labels, class_counts) if cfg.balance == "sampler" else None
    train_splits = {size: splits["train"]}  # by training size; more join as progressive resizing reaches them

    if resume and (run / "checkpoint.pt").is_file():  # else: killed before epoch 1 ended, start over
        state = load_checkpoint(run / "checkpoint.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order_gen.set_state(state["rng"]["order"])
        aug_gen.set_state(state["rng"]["aug"])
        if ema_net is not None:
            ema_net.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"])
        history = list(state["history"])
        best = state.get("best", best)
    write_status(run, "running", epoch=len(history))
    writer = None
    if cfg.tensorboard:  # a live view: `tensorboard --logdir RUN/tensorboard`
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard"), purge_step=len(history) + 1)

    # --- epochs ------------------------------------------------------------------------------
    weight = class_weights(class_counts).to(device) if cfg.balance == "weights" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)
    t_start = time.perf_counter() - sum(h["seconds"] for h in history)
    steps_done = int(history[-1].get("steps", 0)) if history else 0
    stopped_early = False  # by --budget (steps or seconds), before the epochs asked for
    stopped_by = None  # "patience" when --patience ended the run
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        budget = _Budget(
            steps=None if cfg.max_steps is None else cfg.max_steps - steps_done,
            deadline=None if cfg.max_seconds is None else t_start + cfg.max_seconds,
        )
        tr_size = epoch_sizes[epoch - 1]
        desc = f"{recipe.name} {epoch}/{cfg.epochs}" + (f" {tr_size}px" if progressive else "")
        if tr_size not in train_splits:
            train_splits[tr_size] = resident(caches[tr_size]["train"], device)
        try:
            tr_loss, tr_acc, steps = _train_epoch(
                net, train_splits[tr_size], recipe.batch_size, optimizer, scheduler, loss_fn, to_input, aug,
                order_gen, aug_gen, device, precision, desc, epoch, budget,
                ema=(ema_net, recipe.ema, steps_done) if ema_net is not None else None,
                drop_last=drop_last, sides=sides, draw=draw,
            )
        except Diverged as e:
            write_status(run, "diverged", epoch=e.epoch, step=e.step, message=str(e))
            raise
        except KeyboardInterrupt:
            write_status(run, "interrupted", epoch=len(history))
            raise Interrupted(
                f"stopped in epoch {epoch}; {run} holds the checkpoint of epoch {len(history)}: "
                f"continue with `imgclf train --resume {run}`"
            ) from None
        steps_done += steps
        # The training-size views double the cost of a validation pass (~6% of a fastcnn epoch), for a
        # curve that only watches progress: they join in the last epoch, whose val_acc is then the
        # saved model's.
        last = epoch == cfg.epochs or budget.spent
        val_logits = predict_logits(ema_net or net, splits["val"], to_input, device, precision, cfg.eval_batch_size,
                                    tta=recipe.test_mirror, views=views["val"] if last else [])
        val_loss, val_probs, _ = loss_and_predictions(val_logits, splits["val"].labels)
        val_acc = float((val_probs.argmax(1) == splits["val"].labels).mean()) if len(val_probs) else float("nan")
        history.append({
            "epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 3),
            "steps": steps_done,
        })
        write_csv(run / "history.csv", HISTORY_COLUMNS, ([h[c] for c in HISTORY_COLUMNS] for h in history))
        if writer is not None:
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                writer.add_scalar(k, history[-1][k], epoch)
            writer.flush()
        if val_acc > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": val_acc,
                    "state": copy.deepcopy((ema_net or trained).state_dict()) if cfg.keep == "best" else None}
        patience_out = cfg.patience is not None and epoch - best["epoch"] >= cfg.patience and epoch < cfg.epochs
        save_checkpoint(run, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "history": history,
            "rng": {"order": order_gen.get_state(), "aug": aug_gen.get_state(), "torch": torch.get_rng_state()},
            **({"ema": ema_net.state_dict()} if ema_net is not None else {}), "best": best,
        })
        if patience_out:
            console.print(f"no better val accuracy for {cfg.patience} epochs (best {best['val_acc']:.2%}, epoch "
                          f"{best['epoch']}): training stops here (--patience)")
            stopped_by = "patience"
            break
        if budget.spent:
            stopped_early = epoch < cfg.epochs or steps < steps_per_epoch
            if stopped_early:
                console.print(f"budget reached in epoch {epoch} of {cfg.epochs}: training stops here")
            break

    # --- weights, curves, test metrics ---------------------------------------------------------
    if writer is not None:
        writer.close()
    if ema_net is not None:  # the averaged weights are the result
        trained.load_state_dict(ema_net.state_dict())
    if cfg.keep == "best" and best["state"] is not None and best["epoch"] != len(history):
        trained.load_state_dict(best["state"])
        console.print(f"keeping epoch {best['epoch']}'s weights (val accuracy {best['val_acc']:.2%}; --keep best)")
    meta["epoch_kept"] = best["epoch"] if cfg.keep == "best" and best["state"] is not None else len(history)
    save_weights(run, model, meta)
    plot_history(history, "loss", run / "loss.png", f"{recipe.name}: loss")
    plot_history(history, "acc", run / "accuracy.png", f"{recipe.name}: accuracy")
    metrics = None
    if cfg.evaluate_test:
        metrics = evaluate_model(net, meta, splits["test"], "test", run, device, precision, cfg.channels_last,
                                 cfg.eval_batch_size, to_input=to_input, views=views["test"])
    seconds = time.perf_counter() - t_start
    write_status(run, "done", epoch=len(history), seconds=round(seconds, 3), stopped_by_budget=stopped_early,
                 **({"stopped_by": stopped_by} if stopped_by else {}),
                 **({"best_epoch": best["epoch"]} if cfg.keep == "best" or cfg.patience else {}))
    if cfg.report and cfg.evaluate_test:
        from .report import build_report

        build_report(run)
    return RunResult(run, "done", history, metrics, seconds)


@dataclass
class _Budget:
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


def _train_epoch(model, split: CachedSplit, batch_size, optimizer, scheduler, loss_fn, to_input, aug,
                 order_gen, aug_gen, device, precision, desc, epoch, budget: _Budget,
                 ema=None, drop_last: bool = False, sides: torch.Tensor | None = None,
                 draw=None) -> tuple[float, float, int]:
    """One pass over the training split (or until the budget runs out): (loss, accuracy, steps).

    Loss/accuracy sums stay on the device until the bar refreshes, so batch-size-1 SGD is not
    slowed by a host sync per step. `ema` = (averaged copy, decay, steps before this epoch); `sides`:
    alternating flips, which images are mirrored in odd epochs (the others in even ones); `draw`:
    f(generator) -> this epoch's image order (the balanced sampler), instead of a permutation."""
    model.train()
    if ema is not None:
        ema_net, decay, steps_before = ema
        ema_pairs = _float_and_other(ema_net, getattr(model, "_orig_mod", model))  # compiled: its module
    n = len(split) - len(split) % batch_size if drop_last else len(split)  # images this epoch trains on
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, step, last_ui = 0, 0, 0.0
    with make_progress("img", "loss {task.fields[loss]} acc {task.fields[acc]}") as bar:
        task = bar.add_task(desc, total=n, loss="-", acc="-")
        order = draw(order_gen) if draw is not None else None
        for x, y, rows in batches(split, batch_size, shuffle=True, generator=order_gen, pin=device.type == "cuda",
                                  drop_last=drop_last, with_index=True, order=order):
            if aug.active:
                x = augment(x, aug, aug_gen, None if sides is None else sides[rows] ^ (epoch % 2 == 0))
            xb, yb = to_input(x), y.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if ema is not None:
                _ema_update(ema_pairs, decay, steps_before + step)
            seen += len(y)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == yb).sum()
            now = time.perf_counter()
            stop = budget.exhausted(step)
            if now - last_ui > 0.25 or seen == n or stop:
                last_ui = now
                total = float(loss_sum)  # one sync per refresh: also the divergence check
                if not math.isfinite(total):
                    raise Diverged(f"loss became {total} at epoch {epoch}, step {step}", epoch, step)
                bar.update(task, completed=seen, loss=f"{total / seen:.4f}", acc=f"{int(correct) / seen:.2%}")
            if stop:
                break
    return float(loss_sum) / seen, int(correct) / seen, step


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """Inverse class frequency, mean 1 over the classes present (an absent class weighs 0)."""
    c = torch.tensor(counts, dtype=torch.float32)
    w = torch.where(c > 0, c.sum() / (c.clamp(min=1) * (c > 0).sum()), torch.zeros_like(c))
    return w


def balanced_draw(labels: np.ndarray, counts: np.ndarray):
    """f(generator) -> len(labels) indices drawn with replacement, each with probability 1 / its
    class's count: every class is drawn equally often on average."""
    p = torch.from_numpy(1.0 / counts[labels]).double()
    return lambda gen: torch.multinomial(p, len(labels), replacement=True, generator=gen)


def _float_and_other(ema_net, model):
    """(EMA float tensors, model float tensors, EMA other, model other): lists built once per epoch."""
    pairs = list(zip(ema_net.state_dict().values(), model.state_dict().values()))
    fl = [(e, m) for e, m in pairs if e.is_floating_point()]
    ot = [(e, m) for e, m in pairs if not e.is_floating_point()]
    return [e for e, _ in fl], [m for _, m in fl], [e for e, _ in ot], [m for _, m in ot]


@torch.no_grad()
def _ema_update(pairs, decay: float, step: int) -> None:
    """ema <- ema + (1 - d) * (w - ema), one fused op over all tensors. d ramps up as (1+t)/(10+t)
    so the first steps' random weights wash out quickly; BN buffers are averaged too, and integer
    counters copied."""
    ema_f, model_f, ema_o, model_o = pairs
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema_f, model_f, 1.0 - d)
    for e, m in zip(ema_o, model_o):
        e.copy_(m)


def _scheduler(optimizer, schedule: str, total_steps: int, warmup: float = 0.2):
    """Per-step LR multiplier: constant (the tutorial), cosine decay, or one-cycle (linear warm-up
    over `warmup` of the steps, then linear decay to zero)."""
    if schedule == "cosine":
        f = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))  # noqa: E731
    elif schedule == "onecycle":
        warm = max(1, int(warmup * total_steps))
        f = lambda s: (s + 1) / warm if s < warm else max(0.0, (total_steps - s) / (total_steps - warm))  # noqa: E731
    else:
        f = lambda s: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def evaluate_model(model, meta, split: CachedSplit, split_name: str, run: Path, device, precision: str,
                   channels_last: bool, batch_size: int = 256, to_input=None, views=()) -> dict:
    """Metrics on one split; writes metrics(.json), predictions and the confusion matrix PNG.
    `views`: the split cached at the run's decoded test-time sizes (`view_sizes`)."""
    to_input = to_input or input_fn(device, meta["mean"], meta["std"], channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    logits = predict_logits(model, split, to_input, device, precision, batch_size, tta=meta.get("tta", False),
                            sizes=view_sizes(meta)[1], views=views)
    loss, probs, losses = loss_and_predictions(logits, split.labels)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    metrics = {"split": split_name, "loss": loss, **compute_metrics(split.labels, pred, meta["classes"])}
    suffix = "" if split_name == "test" else f"-{split_name}"
    write_json(run / f"metrics{suffix}.json", metrics)
    save_predictions(run / f"predictions{suffix}.csv", split, probs, losses, meta["classes"])
    plot_confusion(np.array(metrics["confusion_matrix"]), meta["classes"], run / f"confusion{suffix}.png",
                   f"confusion matrix ({split_name})")
    return metrics


def evaluate_run(run: Path | str, split: str = "test", data: Path | str | None = None,
                 device: str = "auto") -> dict:
    """Re-evaluate a finished run on a split of its dataset (or of `data`, prepared the same way)."""
    from .runfolder import load_model

    run = Path(run)
    cfg = read_config(run)
    dev = pick_device(device)
    model, meta = load_model(run, dev)
    ds = load_dataset(data or cfg["data"])
    if ds.classes != meta["classes"]:
        raise ImgclfError(f"dataset classes {ds.classes} differ from the run's {meta['classes']}")
    ds.split_rows(split)  # validates the split name
    cached = open_cache(ds, meta["input_size"])[split]
    views = [open_cache(ds, s)[split] for s in view_sizes(meta)[0]]
    precision = resolve_precision(cfg.get("precision", "auto"), dev)
    return evaluate_model(model, meta, cached, split, run, dev, precision, cfg.get("channels_last", True),
                          views=views)


def config_from_run(run: Path | str) -> TrainConfig:
    """The TrainConfig a run was started with (for --resume)."""
    d = dict(read_config(run))
    known = {f for f in TrainConfig.__dataclass_fields__}
    kw = {k: v for k, v in d.items() if k in known}
    kw["recipe"] = recipe_from_dict(kw["recipe"]) if kw.get("recipe") else None
    kw["data"], kw["out"] = Path(kw["data"]), Path(run)
    return TrainConfig(**kw)
