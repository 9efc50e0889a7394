"""Stage 6a: a per-recipe learning-rate search on the validation split (compare --tune-lr).

Fair to every recipe (each gets the same grid around its own lr, the same seed and starting
weights) and blind to the test split, which only the comparison itself looks at.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from .errors import Diverged
from .files import read_csv, write_csv
from .plots import plot_lr_search
from .progress import console
from .distributed import SINGLE
from .train import train

LR_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)  # x the recipe's lr: a log grid, two decades around the default


def tune_learning_rates(cfg, out: Path, data: Path, init: dict):
    """Per recipe: train `tune_epochs` at each lr of LR_GRID x its lr (the first seed), keep the lr
    with the best val accuracy (val loss breaks ties). Test data is never looked at. Cost:
    len(LR_GRID) x tune_epochs epochs per recipe."""
    rows = []
    for recipe in cfg.recipes:
        for f in LR_GRID:
            lr = float(f"{recipe.lr * f:.3g}")
            trial = replace(recipe, lr=lr, epochs=cfg.tune_epochs)
            rc = replace(cfg.run_config(trial, cfg.base.seed, out / "tune" / recipe.name / f"lr{lr:g}", data,
                                        budget=False), evaluate_test=False)
            status, val_acc, val_loss = "done", float("nan"), float("nan")
            console.print(f"[bold]tune {recipe.name}[/bold] lr {lr:g}")
            try:
                res = train(rc, init_state=init, dist=SINGLE)  # one process, under torchrun too
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
    return with_tuned(cfg, out)


def with_tuned(cfg, out: Path):
    """Replace each recipe's lr by the tuned one recorded in tune.csv, if any."""
    if not (out / "tune.csv").is_file():
        return cfg
    chosen = {r["recipe"]: float(r["lr"]) for r in read_csv(out / "tune.csv") if r["chosen"] == "True"}
    return replace(cfg, recipes=[replace(r, lr=chosen.get(r.name, r.lr)) for r in cfg.recipes])


