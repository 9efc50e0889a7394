"""Stage 6: the tutorial's experiment, done so that its answer can be trusted.

One model; per seed, one set of initial weights shared by every recipe, and one split; one
training run per (recipe, seed). Then: mean, std and 95% CI per recipe, paired significance
tests across seeds, overlaid curves with bands, a ranking, and an HTML report. Optional: equal
budgets in steps or seconds, time-to-target-accuracy, a per-recipe LR search on the val split,
and recipes trained in parallel worker processes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .cache import open_cache
from .errors import Diverged, ImgclfError
from .files import prepare_out_dir, read_csv, read_json, write_csv, write_json
from .manifest import load_dataset
from .models import create_model, get_spec
from .prepare import ensure_prepared
from .plots import plot_lr_search, plot_overlay
from .progress import console, default_workers
from .recipes import PRESETS, TUTORIAL_PRESETS, Recipe
from .runfolder import read_status
from .stats import better_than, describe, paired_tests
from .train import TrainConfig, train

BUDGET_KINDS = ("epochs", "steps", "seconds")
LR_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)  # x the recipe's lr: a log grid, two decades around the default
SUMMARY_COLUMNS = [
    "rank", "recipe", "status", "seeds", "optimizer", "lr", "batch_size", "momentum", "epochs", "steps",
    "test_accuracy", "test_accuracy_std", "test_accuracy_ci_low", "test_accuracy_ci_high",
    "test_f1", "test_f1_std", "test_f1_ci_low", "test_f1_ci_high", "test_precision", "test_recall", "test_loss",
    "final_train_loss", "final_train_acc", "final_val_loss", "final_val_acc", "seconds",
    "target", "seconds_to_target", "steps_to_target", "diverged_epoch", "better_than",
]
SEED_COLUMNS = ["recipe", "seed", "status", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_loss",
                "epochs", "steps", "seconds", "seconds_to_target", "steps_to_target", "diverged_epoch"]


@dataclass
class CompareConfig:
    data: Path
    out: Path
    recipes: list[Recipe] = field(default_factory=lambda: [PRESETS[n] for n in TUTORIAL_PRESETS])
    model: str = "seed-cnn"
    pretrained: bool = False
    pretrained_path: str | None = None
    mode: str = "finetune"  # with pretrained: probe | finetune
    epochs: int = 2
    seed: int = 0
    seeds: int = 1  # K runs per recipe, seeds seed .. seed+K-1
    resplit: bool = False  # each seed also draws its own train/val/test split
    budget: str | None = None  # "epochs=10" | "steps=5000" | "seconds=300"; default: --epochs
    target: float | None = None  # report time and steps to this val accuracy
    tune_lr: bool = False
    tune_epochs: int = 1
    jobs: int = 1
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    hflip: bool = True
    vflip: bool = False
    workers: int = field(default_factory=default_workers)
    force: bool = False

    def validate(self) -> "CompareConfig":
        if not self.recipes:
            raise ImgclfError("--optimizers: give at least one recipe")
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ImgclfError(f"--optimizers: recipe names must be unique, got {names}")
        for r in self.recipes:
            r.validate()
        get_spec(self.model)
        if self.epochs < 1:
            raise ImgclfError(f"--epochs must be >= 1, got {self.epochs}")
        if not 1 <= self.seeds <= 100:
            raise ImgclfError(f"--seeds must be between 1 and 100, got {self.seeds}")
        if self.target is not None and not 0 < self.target <= 1:
            raise ImgclfError(f"--target is a val accuracy in (0, 1], got {self.target}")
        if not 1 <= self.jobs <= 64:
            raise ImgclfError(f"--jobs must be between 1 and 64, got {self.jobs}")
        if self.tune_epochs < 1:
            raise ImgclfError(f"--tune-epochs must be >= 1, got {self.tune_epochs}")
        parse_budget(self.budget)
        return self

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]


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


def run_name(recipe: str, seed: int, cfg: CompareConfig) -> str:
    return recipe if cfg.seeds == 1 else f"{recipe}-seed{seed}"


def compare(cfg: CompareConfig, resume: bool = False) -> list[dict]:
    """Train every (recipe, seed) (skipping finished ones on resume) and rank; returns summary rows."""
    cfg.validate()
    out = Path(cfg.out)
    if resume:
        if not (out / "compare.json").is_file():
            raise ImgclfError(f"{out} is not a comparison folder (no compare.json); nothing to resume")
        cfg = _with_tuned(cfg, out)
    else:
        prepare_out_dir(out, cfg.force, "comparison")
    cfg = replace(cfg, data=ensure_prepared(cfg.data, out / "data", cfg.seed))
    if not resume:
        _write_spec(out, cfg)

    data_for = {s: _dataset_for_seed(cfg, out, s) for s in cfg.seed_list}
    size = get_spec(cfg.model).input_size
    for d in dict.fromkeys(data_for.values()):
        open_cache(load_dataset(d), size, workers=cfg.workers)  # build once, up front
    num_classes = len(load_dataset(cfg.data).classes)
    inits = {s: _initial_weights(out, cfg, s, num_classes) for s in cfg.seed_list}

    if cfg.tune_lr and not (out / "tune.csv").is_file():
        cfg = tune_learning_rates(cfg, out, data_for[cfg.seed], inits[cfg.seed])

    units = []
    for recipe in cfg.recipes:
        for s in cfg.seed_list:
            rc = run_config(cfg, recipe, s, out / "runs" / run_name(recipe.name, s, cfg), data_for[s])
            status = read_status(rc.out)["status"] if resume else "missing"
            if status in ("done", "diverged"):
                console.print(f"[dim]{rc.out.name}: already {status}, skipped[/dim]")
                continue
            units.append((rc, inits[s], resume and (rc.out / "checkpoint.pt").is_file()))
    _run_units(units, cfg.jobs)

    per_seed = seed_rows(out, cfg)
    rows = summarize(out, cfg, per_seed)
    histories = {r.name: [x["history"] for x in per_seed if x["recipe"] == r.name and x["history"]]
                 for r in cfg.recipes}
    plot_overlay(histories, "loss", out / "loss.png")
    plot_overlay(histories, "acc", out / "accuracy.png")
    from .report import build_report

    build_report(out)
    return rows


def run_config(cfg: CompareConfig, recipe: Recipe, seed: int, out: Path, data: Path) -> TrainConfig:
    """The TrainConfig of one (recipe, seed), with the comparison's budget turned into limits."""
    epochs, max_steps, max_seconds = recipe.epochs or cfg.epochs, None, None
    budget = parse_budget(cfg.budget)
    if budget:
        kind, v = budget
        if kind == "epochs":
            epochs = int(v)
        elif kind == "steps":
            n_train = len(load_dataset(data).split_rows("train"))
            max_steps = int(v)
            epochs = math.ceil(max_steps / math.ceil(n_train / recipe.batch_size))
        else:
            max_seconds, epochs = v, 100_000  # stops on time, not epochs
    return TrainConfig(
        data=data, out=out, model=cfg.model, recipe=recipe, epochs=epochs, seed=seed, device=cfg.device,
        precision=cfg.precision, channels_last=cfg.channels_last, hflip=cfg.hflip, vflip=cfg.vflip,
        workers=cfg.workers, report=False, max_steps=max_steps, max_seconds=max_seconds,
        pretrained=cfg.pretrained, pretrained_path=cfg.pretrained_path, mode=cfg.mode,
    )


def _run_units(units: list[tuple[TrainConfig, dict, bool]], jobs: int) -> None:
    """Train each unit, in order, or in `jobs` worker processes sharing the cores between them."""
    if jobs <= 1 or len(units) <= 1:
        for rc, init, res in units:
            _train_unit(rc, init, res)
        return
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_worker_threads,
                             initargs=(threads,)) as ex:
        for f in [ex.submit(_train_unit, rc, init, res) for rc, init, res in units]:
            f.result()


def _worker_threads(n: int) -> None:
    os.environ["IMGCLF_QUIET"] = "1"  # bars from several processes would interleave
    torch.set_num_threads(n)


def _train_unit(rc: TrainConfig, init: dict, resume: bool) -> None:
    console.print(f"[bold]{rc.out.name}[/bold]: {rc.recipe.description or rc.recipe.optimizer}")
    try:
        train(rc, init_state=init, resume=resume)
    except Diverged as e:
        console.print(f"[red]{rc.out.name} diverged[/red] ({e}); the other recipes carry on")


def _write_spec(out: Path, cfg: CompareConfig) -> None:
    write_json(out / "compare.json", {
        "data": str(Path(cfg.data).resolve()), "model": cfg.model, "epochs": cfg.epochs, "seed": cfg.seed,
        "seeds": cfg.seeds, "resplit": cfg.resplit, "budget": cfg.budget, "target": cfg.target,
        "tune_lr": cfg.tune_lr, "jobs": cfg.jobs, "recipes": [r.to_dict() for r in cfg.recipes],
        "pretrained": cfg.pretrained, "mode": cfg.mode if cfg.pretrained else "",
        "settings": {k: getattr(cfg, k) for k in ("device", "precision", "channels_last", "hflip", "vflip")},
    })


def _dataset_for_seed(cfg: CompareConfig, out: Path, seed: int) -> Path:
    """The prepared dataset itself, or with --resplit a copy of its manifest split with this seed."""
    if not cfg.resplit:
        return Path(cfg.data)
    from .manifest import MANIFEST_COLUMNS
    from .split import SPLITS, assign_splits

    d = out / "splits" / f"seed{seed}"
    if (d / "manifest.csv").is_file():
        return d
    ds = load_dataset(cfg.data)
    frac = ds.info["fractions"]
    splits = assign_splits([r["class"] for r in ds.rows], frac["val"], frac["test"], seed)
    rows = [{**r, "split": s} for r, s in zip(ds.rows, splits)]
    write_csv(d / "manifest.csv", MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in rows))
    counts = {s: {c: sum(1 for r in rows if r["split"] == s and r["class"] == c) for c in ds.classes} for s in SPLITS}
    write_json(d / "dataset.json", {**ds.info, "seed": seed, "counts": counts, "resplit_of": str(ds.root)})
    return d


def _initial_weights(out: Path, cfg: CompareConfig, seed: int, num_classes: int) -> dict:
    """One random init per seed (pretrained backbone + random head with --pretrained), saved and
    shared by every recipe: within a seed, differences come from the optimizer alone, which is
    what makes the per-seed comparison paired."""
    path = out / f"init-seed{seed}.safetensors"
    if path.is_file():
        return load_file(str(path))
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes)
    if cfg.pretrained:
        from .pretrained import load_pretrained, weights_file

        load_pretrained(model, weights_file(cfg.model, cfg.pretrained_path)[0])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return state


# --- learning-rate search ------------------------------------------------------------------------


def tune_learning_rates(cfg: CompareConfig, out: Path, data: Path, init: dict) -> CompareConfig:
    """Per recipe: train `tune_epochs` at each lr of LR_GRID x its lr (seed cfg.seed), keep the lr
    with the best val accuracy (val loss breaks ties). Test data is never looked at. Cost:
    len(LR_GRID) x tune_epochs epochs per recipe."""
    rows = []
    for recipe in cfg.recipes:
        for f in LR_GRID:
            lr = float(f"{recipe.lr * f:.3g}")
            trial = replace(recipe, lr=lr, epochs=cfg.tune_epochs)
            rc = replace(run_config(replace(cfg, budget=None), trial, cfg.seed,
                                    out / "tune" / recipe.name / f"lr{lr:g}", data), evaluate_test=False)
            status, val_acc, val_loss = "done", float("nan"), float("nan")
            console.print(f"[bold]tune {recipe.name}[/bold] lr {lr:g}")
            try:
                res = train(rc, init_state=init)
                val_acc, val_loss = res.history[-1]["val_acc"], res.history[-1]["val_loss"]
            except Diverged:
                status = "diverged"
            rows.append({"recipe": recipe.name, "lr": lr, "factor": f, "status": status, "val_acc": val_acc,
                         "val_loss": val_loss})
    chosen = {}
    for recipe in cfg.recipes:
        ok = [r for r in rows if r["recipe"] == recipe.name and r["status"] == "done" and not math.isnan(r["val_acc"])]
        best = max(ok, key=lambda r: (r["val_acc"], -r["val_loss"])) if ok else None
        chosen[recipe.name] = best["lr"] if best else recipe.lr
        for r in rows:
            if r["recipe"] == recipe.name:
                r["chosen"] = r["lr"] == chosen[recipe.name]
    write_csv(out / "tune.csv", ["recipe", "lr", "factor", "status", "val_acc", "val_loss", "chosen"],
              ([r[c] for c in ("recipe", "lr", "factor", "status", "val_acc", "val_loss", "chosen")] for r in rows))
    plot_lr_search(rows, chosen, out / "tune.png")
    return _with_tuned(cfg, out)


def _with_tuned(cfg: CompareConfig, out: Path) -> CompareConfig:
    """Replace each recipe's lr by the tuned one recorded in tune.csv, if any."""
    if not (out / "tune.csv").is_file():
        return cfg
    chosen = {r["recipe"]: float(r["lr"]) for r in read_csv(out / "tune.csv") if r["chosen"] == "True"}
    return replace(cfg, recipes=[replace(r, lr=chosen.get(r.name, r.lr)) for r in cfg.recipes])


# --- summaries ---------------------------------------------------------------------------------------


def _history(run: Path) -> list[dict]:
    p = run / "history.csv"
    if not p.is_file():
        return []
    return [{k: float(v) for k, v in row.items() if v != ""} for row in read_csv(p)]


def _to_target(hist: list[dict], target: float | None) -> tuple[float | str, float | str]:
    """Training seconds and steps until val accuracy first reached `target` ('' if never)."""
    if target is None:
        return "", ""
    secs = 0.0
    for h in hist:
        secs += h["seconds"]
        if h["val_acc"] >= target:
            return round(secs, 2), int(h.get("steps", 0))
    return "", ""


def seed_rows(out: Path, cfg: CompareConfig) -> list[dict]:
    """One row per (recipe, seed) from its run folder: the raw material of every aggregate."""
    rows = []
    for r in cfg.recipes:
        for s in cfg.seed_list:
            run = out / "runs" / run_name(r.name, s, cfg)
            st = read_status(run)
            hist = _history(run)
            t_secs, t_steps = _to_target(hist, cfg.target)
            row = {"recipe": r.name, "seed": s, "status": st["status"], "epochs": len(hist),
                   "steps": int(hist[-1].get("steps", 0)) if hist else 0,
                   "seconds": round(sum(h["seconds"] for h in hist), 2), "seconds_to_target": t_secs,
                   "steps_to_target": t_steps,
                   "diverged_epoch": st.get("epoch", "") if st["status"] == "diverged" else "",
                   "history": hist}
            if st["status"] == "done":
                m = read_json(run / "metrics.json")
                row.update(test_accuracy=m["accuracy"], test_precision=m["macro"]["precision"],
                           test_recall=m["macro"]["recall"], test_f1=m["macro"]["f1"], test_loss=m["loss"])
            rows.append(row)
    return rows


def summarize(out: Path, cfg: CompareConfig, per_seed: list[dict] | None = None) -> list[dict]:
    """Aggregate per recipe (mean, std, 95% CI over seeds), test pairs, rank, write the files."""
    per_seed = per_seed if per_seed is not None else seed_rows(out, cfg)
    write_csv(out / "seeds.csv", SEED_COLUMNS, ([r.get(c, "") for c in SEED_COLUMNS] for r in per_seed))
    acc_by = {r.name: {x["seed"]: x["test_accuracy"] for x in per_seed if x["recipe"] == r.name and "test_accuracy" in x}
              for r in cfg.recipes}
    tests = paired_tests(acc_by) if cfg.seeds > 1 else []
    if tests:
        write_csv(out / "significance.csv", ["a", "b", "seeds", "mean_diff", "p", "p_holm", "significant"],
                  ([t[c] for c in ("a", "b", "seeds", "mean_diff", "p", "p_holm", "significant")] for t in tests))
    rows = []
    for r in cfg.recipes:
        mine = [x for x in per_seed if x["recipe"] == r.name]
        done = [x for x in mine if x["status"] == "done"]
        statuses = {x["status"] for x in mine}
        status = "done" if statuses == {"done"} else "diverged" if "diverged" in statuses else "/".join(sorted(statuses))
        last = [x["history"][-1] for x in mine if x["history"]]
        mean = lambda xs: sum(xs) / len(xs) if xs else ""  # noqa: E731
        to_t = [x["seconds_to_target"] for x in mine if x["seconds_to_target"] != ""]
        row = {
            "recipe": r.name, "status": status, "seeds": len(mine), "optimizer": r.optimizer, "lr": r.lr,
            "batch_size": r.batch_size, "momentum": r.momentum if r.momentum is not None else "",
            "epochs": mean([x["epochs"] for x in mine]), "steps": mean([x["steps"] for x in mine]),
            "final_train_loss": mean([h["train_loss"] for h in last]), "final_train_acc": mean([h["train_acc"] for h in last]),
            "final_val_loss": mean([h["val_loss"] for h in last]), "final_val_acc": mean([h["val_acc"] for h in last]),
            "seconds": round(mean([x["seconds"] for x in mine]) or 0.0, 2),
            "target": cfg.target if cfg.target is not None else "",
            # reached in every seed: mean over seeds; otherwise say how many never got there
            "seconds_to_target": (round(mean(to_t), 2) if len(to_t) == len(mine) else
                                  f"not reached in {len(mine) - len(to_t)} of {len(mine)}") if cfg.target else "",
            "steps_to_target": (round(mean([x["steps_to_target"] for x in mine if x["steps_to_target"] != ""]))
                                if len(to_t) == len(mine) else "") if cfg.target else "",
            "diverged_epoch": min((x["diverged_epoch"] for x in mine if x["diverged_epoch"] != ""), default=""),
        }
        if done:
            for metric in ("test_accuracy", "test_f1"):
                d = describe([x[metric] for x in done])
                row.update({metric: d["mean"], f"{metric}_std": d["std"], f"{metric}_ci_low": d["ci_low"],
                            f"{metric}_ci_high": d["ci_high"]})
            for metric in ("test_precision", "test_recall", "test_loss"):
                row[metric] = mean([x[metric] for x in done])
            row["better_than"] = " ".join(better_than(tests, r.name))
        rows.append(row)
    ranked = sorted((r for r in rows if "test_accuracy" in r and r["status"] == "done"), key=lambda r: -r["test_accuracy"])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    ranked += [r for r in rows if r not in ranked]
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, ([r.get(c, "") for c in SUMMARY_COLUMNS] for r in ranked))
    (out / "ranking.md").write_text(ranking_markdown(ranked, cfg.seeds), encoding="utf-8")
    return ranked


def ranking_markdown(rows: list[dict], seeds: int = 1) -> str:
    multi = seeds > 1
    head = "| rank | recipe | test accuracy | " + ("95% CI | F1 | better than |" if multi else
                                                     "precision | recall | F1 |") + " wall time |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r.get("rank"):
            if multi:
                lines.append(
                    f"| {r['rank']} | {r['recipe']} | {r['test_accuracy']:.2%} ± {r['test_accuracy_std']:.2%} | "
                    f"{r['test_accuracy_ci_low']:.2%} to {r['test_accuracy_ci_high']:.2%} | "
                    f"{r['test_f1']:.3f} ± {r['test_f1_std']:.3f} | {r['better_than'] or '-'} | {r['seconds']:.1f} s |")
            else:
                lines.append(
                    f"| {r['rank']} | {r['recipe']} | {r['test_accuracy']:.2%} | {r['test_precision']:.3f} | "
                    f"{r['test_recall']:.3f} | {r['test_f1']:.3f} | {r['seconds']:.1f} s |")
        else:
            where = f" at epoch {r['diverged_epoch']}" if r["status"] == "diverged" else ""
            lines.append(f"| - | {r['recipe']} | {r['status']}{where} |" + " |" * (head.count("|") - 5)
                         + f" {r['seconds']:.1f} s |")
    return "\n".join(lines) + "\n"
