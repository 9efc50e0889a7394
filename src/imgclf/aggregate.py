"""Stage 6b: a comparison's runs -> per-seed rows, per-recipe statistics, the ranking.

Reads only the run folders (status.json, history.csv, metrics.json), so a summary can be rebuilt
from a finished or resumed comparison. `ranking_table` is the one rendering of the ranking that
the terminal, ranking.md and report.html each show.
"""

from __future__ import annotations

from pathlib import Path

from .files import atomic_write_text, read_csv, read_json, write_csv
from .runfolder import read_status
from .stats import better_than, describe, paired_tests

SUMMARY_COLUMNS = [
    "rank", "recipe", "status", "seeds", "optimizer", "lr", "batch_size", "momentum", "epochs", "steps",
    "test_accuracy", "test_accuracy_std", "test_accuracy_ci_low", "test_accuracy_ci_high",
    "test_f1", "test_f1_std", "test_f1_ci_low", "test_f1_ci_high", "test_precision", "test_recall", "test_loss",
    "final_train_loss", "final_train_acc", "final_val_loss", "final_val_acc", "seconds", "cpu_seconds",
    "target", "seconds_to_target", "steps_to_target", "diverged_epoch", "better_than",
]
SEED_COLUMNS = ["recipe", "seed", "status", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_loss",
                "epochs", "steps", "seconds", "cpu_seconds", "seconds_to_target", "steps_to_target", "diverged_epoch"]
MULTI_SEED_NOTE = ("± is one std over seeds, the CI a 95% t-interval of the mean; 'better than': a paired t-test "
                   "over seeds, Holm-adjusted p < 0.05")


def run_name(recipe: str, seed: int, seeds: int) -> str:
    """A run's folder under RUNS/: the recipe's name, and its seed when there are several."""
    return recipe if seeds == 1 else f"{recipe}-seed{seed}"


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


def seed_rows(out: Path, cfg) -> list[dict]:
    """One row per (recipe, seed) from its run folder: the raw material of every aggregate."""
    rows = []
    for r in cfg.recipes:
        for s in cfg.seed_list:
            run = out / "runs" / run_name(r.name, s, cfg.seeds)
            st = read_status(run)
            hist = _history(run)
            t_secs, t_steps = _to_target(hist, cfg.target)
            row = {"recipe": r.name, "seed": s, "status": st["status"], "epochs": len(hist),
                   "steps": int(hist[-1].get("steps", 0)) if hist else 0,
                   "seconds": round(sum(h["seconds"] for h in hist), 2),
                   "cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in hist), 2), "seconds_to_target": t_secs,
                   "steps_to_target": t_steps,
                   "diverged_epoch": st.get("epoch", "") if st["status"] == "diverged" else "",
                   "history": hist}
            if st["status"] == "done":
                m = read_json(run / "metrics.json")
                row.update(test_accuracy=m["accuracy"], test_precision=m["macro"]["precision"],
                           test_recall=m["macro"]["recall"], test_f1=m["macro"]["f1"], test_loss=m["loss"])
            rows.append(row)
    return rows


def summarize(out: Path, cfg, per_seed: list[dict] | None = None) -> list[dict]:
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
            "cpu_seconds": round(mean([x["cpu_seconds"] for x in mine]) or 0.0, 2),
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
    atomic_write_text(out / "ranking.md", ranking_markdown(ranked, cfg.seeds, cfg.target))
    return ranked


def ranking_table(rows: list[dict], seeds: int, target=None) -> tuple[list[str], list[list[str]]]:
    """The ranking as text cells: (header, one row per recipe, ranked first, then failed ones).
    `rows` as `summarize` returns them or as summary.csv holds them (numbers or their text)."""
    multi = seeds > 1
    header = (["rank", "recipe", "test accuracy"] + (["95% CI", "F1", "better than"] if multi else
                                                     ["precision", "recall", "F1"])
              + (["time to target", "steps to target"] if target else []) + ["steps", "wall time", "CPU time"])
    pct = lambda v: f"{float(v):.2%}"  # noqa: E731
    f3 = lambda v: f"{float(v):.3f}"  # noqa: E731
    body = []
    for r in rows:
        if r.get("rank") not in (None, ""):
            cells = [str(r["rank"]), r["recipe"], pct(r["test_accuracy"])
                     + (f" ± {pct(r['test_accuracy_std'])}" if multi else "")]
            cells += ([f"{pct(r['test_accuracy_ci_low'])} to {pct(r['test_accuracy_ci_high'])}",
                       f"{f3(r['test_f1'])} ± {f3(r['test_f1_std'])}", r["better_than"] or "-"] if multi else
                      [f3(r["test_precision"]), f3(r["test_recall"]), f3(r["test_f1"])])
        else:
            where = f" at epoch {r['diverged_epoch']}" if r["status"] == "diverged" else ""
            cells = ["-", r["recipe"], f"{r['status']}{where}", "", "", ""]
        if target:
            t = r.get("seconds_to_target", "")
            number = isinstance(t, (int, float)) or (isinstance(t, str) and t[:1].isdigit())
            cells += [f"{float(t):.1f} s" if number else (t or "never"), str(r.get("steps_to_target", ""))]
        cpu = r.get("cpu_seconds", "")
        cells += [f"{float(r['steps']):.0f}" if r.get("steps") not in (None, "") else "",
                  f"{float(r['seconds']):.1f} s", f"{float(cpu):.1f} s" if cpu not in (None, "") else ""]
        body.append(cells)
    return header, body


def ranking_markdown(rows: list[dict], seeds: int = 1, target=None) -> str:
    header, body = ranking_table(rows, seeds, target)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return "\n".join(lines) + "\n" + (f"\n{MULTI_SEED_NOTE}\n" if seeds > 1 else "")
