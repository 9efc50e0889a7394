"""Train a model made of separately trained parts (`ModelSpec.parts`), then use it as one model.

    imgclf train DATA --model efficientnet-lite-ensemble --pretrained --epochs 4

Each part trains as a run of its own in RUN/parts/NAME (config, curves, checkpoints, weights),
in the spec's order: a probe part with the probe settings the planner uses (plan.PROBE_SETTINGS),
a fine-tuned part with the planner's fine-tune settings for --epochs, --optimizer / --lr /
--batch-size / --schedule overriding them. Their weights go into the one model saved in RUN, so
predict, export, serve and audit see one model. The parts skip their own test pass; the run's
test metrics average the parts' test predictions, a probe part's from the features its run
cached (as a probe run scores itself; the whole model agrees up to bf16 rounding), which saves
the probe backbones a second pass over the test images (~45 s for 3,000 at 240 px here). A
--budget counts for all the parts together; --resume skips the finished parts and resumes the
one that was stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from .cache import open_cache
from .device import environment, keep_freed_memory, pick_device, resolve_precision
from .distributed import SINGLE, Dist
from .errors import Diverged, ImgclfError, Interrupted
from .evaluate import predict_logits, write_evaluation
from .files import read_csv
from .load import input_fn
from .manifest import load_dataset
from .models import create_model, get_spec
from .plan import FINETUNE_MIN_EPOCHS, FINETUNE_SETTINGS, PROBE_SETTINGS
from .plots import plot_history
from .pretrained import feature_input, open_features, weights_file
from .progress import console
from .runfolder import (CHECKPOINT, load_model, read_status, save_weights, start_run_folder, write_history,
                        write_status)


def part_config(cfg, name: str, mode: str, out: Path):
    """The TrainConfig of one part: its model and mode with the planner's settings for that mode."""
    if mode == "probe":  # every feature, every epoch: --epoch-images is the fine-tune's
        settings = {**PROBE_SETTINGS, "epoch_images": None}
    else:  # what the user set on the ensemble is the fine-tune's
        settings = {k: getattr(cfg, k) if getattr(cfg, k) is not None else v for k, v in FINETUNE_SETTINGS.items()}
        settings["epochs"] = cfg.epochs or FINETUNE_MIN_EPOCHS
    return replace(cfg, model=name, mode=mode, out=out, pretrained=True, pretrained_path=None, evaluate_test=False,
                   report=False, force=True, plan=None, keep="last", patience=None, **settings).resolve()


def test_logits(model, spec, ds, cfg, device, precision: str):
    """(the test split, the model's log-probabilities on it): each part's, averaged as the model's
    forward averages them."""
    logps, split = [], None
    for attr, name, mode in spec.parts:
        part_spec = get_spec(name)
        part = getattr(model, attr).to(device, memory_format=torch.channels_last)
        caches = open_cache(ds, part_spec.input_size, workers=cfg.workers)
        images = caches["test"]
        if split is not None and images.paths != split.paths:
            raise ImgclfError(f"the caches of {ds.root} at two sizes hold other test images: re-run `imgclf prepare`")
        split = images
        if mode == "probe":  # its run cached the features of every split
            feats = open_features(ds, caches, part, part_spec, weights_file(name, None)[1], device,
                                  precision)["test"]
            logits = predict_logits(part_spec.head_of(part), feats, feature_input(device), device, precision,
                                    cfg.eval_batch_size)
        else:
            to_input = input_fn(device, part_spec.mean, part_spec.std, cfg.channels_last)
            logits = predict_logits(part, images, to_input, device, precision, cfg.eval_batch_size)
        logps.append(torch.from_numpy(logits).float().log_softmax(1))
    return split, (torch.logsumexp(torch.stack(logps), 0) - math.log(len(logps))).numpy()


def train_parts(cfg, resume: bool = False, dist: Dist = SINGLE):
    """Train each part of cfg.model (skipping finished ones on resume), assemble, evaluate; the
    run's history.csv and curves are those of its last part (the one trained over epochs)."""
    from .train import RunResult, train

    if dist.active:
        raise ImgclfError(f"--model {cfg.model} trains its parts one after another in one process: "
                          "run it without --nproc or torchrun")
    keep_freed_memory()
    spec, run = get_spec(cfg.model), Path(cfg.out)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    ds = load_dataset(cfg.data)
    meta = {**spec.meta(), "classes": ds.classes, "num_classes": len(ds.classes), "tta": False, "tta_sizes": [],
            "tta_decode": True, "train_size": spec.input_size, "parts": [list(p) for p in spec.parts]}
    parts = [(attr, part_config(cfg, name, mode, run / "parts" / attr)) for attr, name, mode in spec.parts]
    last = parts[-1][1]  # the run records the recipe and epochs of the part trained over epochs
    start_run_folder(run, resume, cfg.force, {**cfg.to_dict(), "recipe": last.recipe.to_dict(), "epochs": last.epochs},
                     precision, meta, ds, environment(device))
    t_start = time.perf_counter()
    deadline = None if cfg.max_seconds is None else t_start + cfg.max_seconds
    write_status(run, "running", epoch=0)
    model = create_model(cfg.model, len(ds.classes))
    stopped_early = False
    for attr, pc in parts:
        if not (resume and read_status(pc.out)["status"] == "done"):
            console.print(f"[bold]part {attr}[/bold]: {pc.model} ({pc.mode})")
            left = None if deadline is None else max(1.0, deadline - time.perf_counter())
            try:
                train(replace(pc, max_seconds=left), resume=resume and (pc.out / CHECKPOINT).is_file(), dist=SINGLE)
            except Interrupted:  # the part saved its checkpoint; the run resumes from its own folder
                write_status(run, "interrupted", part=attr)
                raise Interrupted(f"stopped in part {attr} ({pc.model}); continue with "
                                  f"`imgclf train --resume {run}`") from None
            except Diverged as e:
                write_status(run, "diverged", part=attr, epoch=e.epoch, step=e.step, message=str(e))
                raise
        stopped_early |= bool(read_status(pc.out).get("stopped_by_budget"))
        part, _ = load_model(pc.out)
        getattr(model, attr).load_state_dict(part.state_dict())
    history = [{k: int(v) if k in ("epoch", "steps") else float(v) for k, v in h.items() if v != ""}
               for h in read_csv(pc.out / "history.csv")]
    save_weights(run, model, meta)
    write_history(run, history)
    plot_history(history, "loss", run / "loss.png", f"{cfg.model} ({spec.parts[-1][0]} part): loss")
    plot_history(history, "acc", run / "accuracy.png", f"{cfg.model} ({spec.parts[-1][0]} part): accuracy")
    metrics = None
    if cfg.evaluate_test:
        test, logits = test_logits(model, spec, ds, cfg, device, precision)
        metrics = write_evaluation(logits, ds.classes, test, "test", run)
    seconds = time.perf_counter() - t_start
    write_status(run, "done", epoch=len(history), seconds=round(seconds, 3), stopped_by_budget=stopped_early)
    if cfg.report and cfg.evaluate_test:
        from .report import build_report

        build_report(run)
    return RunResult(run, "done", history, metrics, seconds)
