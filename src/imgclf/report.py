"""Stage 8: one self-contained HTML report (images embedded, no network) for a run or a comparison.

Built only from the files a run or comparison folder holds (plus the dataset's images for the
sample grid and the worst predictions), so `imgclf report DIR` can rebuild it at any time.
"""

from __future__ import annotations

import base64
import html
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .decode import read_and_decode
from .errors import DecodeError, ImgclfError
from .files import atomic_write_text, read_csv, read_json

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d2330;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #dde;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d6d9e0;padding:.3em .6em;text-align:right}th{background:#f2f4f8}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
.muted{color:#667}.row{display:flex;flex-wrap:wrap;gap:1em}.row figure{margin:0;flex:1 1 420px}
figcaption{font-size:.85em;color:#556}.bad{color:#b00020}.good{color:#0a7d32}
nav a{margin-right:1em}
"""


def build_report(folder: Path | str) -> Path:
    """Write folder/report.html for a run folder or a comparison folder; returns its path."""
    folder = Path(folder)
    if (folder / "compare.json").is_file():
        body, title = _compare_body(folder)
    elif (folder / "config.json").is_file():
        body, title = _run_body(folder)
    else:
        raise ImgclfError(f"{folder} is neither a run folder (config.json) nor a comparison folder (compare.json)")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
           f"<body><h1>{_e(title)}</h1><p class='muted'>{_e(str(folder.resolve()))} &middot; report built {stamp}"
           f"</p>{body}</body></html>")
    out = folder / "report.html"
    atomic_write_text(out, doc)
    return out


# --- bodies ------------------------------------------------------------------------------------


def _run_body(run: Path) -> tuple[str, str]:
    cfg = read_json(run / "config.json")
    recipe = cfg["recipe"]
    status = _status(run)
    parts = [_nav(["dataset", "recipe", *(["plan"] if cfg.get("plan") else []), "curves", "metrics", "worst",
                   "environment"])]
    parts.append(_dataset_section(Path(cfg["data"])))
    parts.append("<h2 id='recipe'>Recipe</h2>" + _table(
        ["setting", "value"],
        [["model", cfg["model"]], ["optimizer", recipe["optimizer"]], ["learning rate", _lr(recipe["lr"])],
         *([["Muon lr (conv filters)", _lr(recipe["muon"])]] if recipe.get("muon") else []),
         ["batch size", recipe["batch_size"]], ["momentum", recipe.get("momentum") or ""],
         ["weight decay", recipe.get("weight_decay", 0)], ["schedule", recipe.get("schedule", "constant")],
         ["horizontal flips", "yes" if recipe.get("hflip", True) else "no"],
         ["epochs", cfg["epochs"]], ["seed", cfg["seed"]], ["precision", cfg.get("precision_resolved", "")],
         ["status", status]]))
    if cfg.get("plan"):
        parts.append(_plan_html(cfg["plan"]))
    parts.append("<h2 id='curves'>Learning curves</h2><div class='row'>"
                 + _figure(run / "loss.png", "loss per epoch (train vs val)")
                 + _figure(run / "accuracy.png", "accuracy per epoch (train vs val)") + "</div>")
    if (run / "history.csv").is_file():
        hist = read_csv(run / "history.csv")
        parts.append(_table(["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"],
                            [[h["epoch"], _f(h["train_loss"], 4), _pct(h["train_acc"]), _f(h["val_loss"], 4),
                              _pct(h["val_acc"]), _lr(h["lr"]), _f(h["seconds"], 1)] for h in hist]))
    if (run / "metrics.json").is_file():
        parts.append("<h2 id='metrics'>Test metrics</h2>" + _metrics_html(read_json(run / "metrics.json"))
                     + _figure(run / "confusion.png", "confusion matrix (test)", width=420))
        parts.append("<h2 id='worst'>Worst test images</h2>" + _worst_html(run))
    parts.append(_env_section(cfg))
    return "".join(parts), f"imgclf run: {run.name} ({recipe['name']}, {cfg['model']})"


def _compare_body(cmp_: Path) -> tuple[str, str]:
    spec = read_json(cmp_ / "compare.json")
    summary = read_csv(cmp_ / "summary.csv") if (cmp_ / "summary.csv").is_file() else []
    seeds = int(spec.get("seeds", 1))
    parts = [_nav(["dataset", "recipes", "ranking", "curves", "confusion", "worst", "environment"])]
    parts.append(_dataset_section(Path(spec["data"])))
    tuned = read_csv(cmp_ / "tune.csv") if (cmp_ / "tune.csv").is_file() else []
    chosen = {r["recipe"]: r["lr"] for r in tuned if r["chosen"] == "True"}
    parts.append("<h2 id='recipes'>Recipes</h2>" + _table(
        ["recipe", "optimizer", "lr" + (" (tuned)" if chosen else ""), "batch", "momentum", "betas", "weight decay",
         "schedule", "epochs"],
        [[r["name"], r["optimizer"], _lr(chosen.get(r["name"], r["lr"])) + (f" (Muon {_lr(r['muon'])})" if r.get("muon")
                                                                          else ""), r["batch_size"], r.get("momentum") or "",
          "/".join(map(str, r["betas"])) if r.get("betas") else "", r.get("weight_decay", 0),
          r.get("schedule", "constant"), r.get("epochs") or spec["epochs"]] for r in spec["recipes"]]))
    if tuned:
        parts.append("<h3>Learning-rate search</h3><p class='muted'>each lr trained briefly from the same weights; "
                     "the best val accuracy wins (test data unseen)</p>"
                     + _table(["recipe", "lr", "status", "val accuracy", "val loss", "chosen"],
                              [[t["recipe"], t["lr"], t["status"], _pct(t["val_acc"]), _f(t["val_loss"], 4),
                                "yes" if t["chosen"] == "True" else ""] for t in tuned])
                     + _figure(cmp_ / "tune.png", "val accuracy against learning rate", width=560))
    parts.append("<h2 id='ranking'>Ranking on the test split</h2>" + _ranking_html(spec, summary, seeds))
    if (cmp_ / "significance.csv").is_file():
        sig = read_csv(cmp_ / "significance.csv")
        parts.append("<h3>Pairwise tests</h3>" + _table(
            ["recipe a", "recipe b", "seeds", "mean difference (a - b)", "p", "Holm p", "significant"],
            [[t["a"], t["b"], t["seeds"], _pct(t["mean_diff"]), _f(t["p"], 4), _f(t["p_holm"], 4),
              "yes" if t["significant"] == "True" else "no"] for t in sig]))
    parts.append("<h2 id='curves'>Learning curves</h2><div class='row'>"
                 + _figure(cmp_ / "loss.png", "loss: solid train, dashed val" + (", band: ±1 std over seeds" if seeds > 1 else ""))
                 + _figure(cmp_ / "accuracy.png", "accuracy: solid train, dashed val") + "</div>")
    first_seed = spec["seed"]
    runs = [cmp_ / "runs" / (r["name"] if seeds == 1 else f"{r['name']}-seed{first_seed}") for r in spec["recipes"]]
    note = f" (seed {first_seed})" if seeds > 1 else ""
    parts.append(f"<h2 id='confusion'>Confusion matrices (test){note}</h2><div class='row'>"
                 + "".join(_figure(r / "confusion.png", r.name, width=320) for r in runs
                           if (r / "confusion.png").is_file()) + "</div>")
    parts.append(f"<h2 id='worst'>Worst test images by loss{note}</h2>"
                 + "".join(f"<h3>{_e(r.name)}</h3>{_worst_html(r)}" for r in runs
                           if (r / "predictions.csv").is_file()))
    first = next((r / "config.json" for r in runs if (r / "config.json").is_file()), None)
    if first:
        parts.append(_env_section(read_json(first)))
    return "".join(parts), f"imgclf comparison: {cmp_.name} ({len(spec['recipes'])} recipes, {spec['model']})"


def _ranking_html(spec: dict, summary: list[dict], seeds: int) -> str:
    from .aggregate import ranking_table

    multi = seeds > 1
    target = spec.get("target")
    header, body = ranking_table(summary, seeds, target)
    for row, r in zip(body, summary):  # failures in red
        if not r["rank"]:
            row[2] = f"<span class='bad'>{_e(row[2])}</span>"
        row[1:2] = [_e(row[1])]
        if multi:
            row[5] = _e(row[5])
    budget = spec.get("budget") or f"epochs={spec['epochs']}"
    intro = (f"<p class='muted'>{_e(spec['model'])}; budget {_e(budget)}; "
             + (f"{seeds} seeds ({'own split each' if spec.get('resplit') else 'same split'}), the same initial "
                "weights for every recipe within a seed; ± is one std over seeds, the CI a 95% t-interval of the "
                "mean, and 'better than' a paired t-test over seeds with Holm-adjusted p &lt; 0.05."
                if multi else f"seed {spec['seed']}, the same initial weights and split for every recipe. One run "
                "per recipe: differences of a few points may be noise (use --seeds).")
             + (f" Target: {float(target):.0%} val accuracy." if target else "") + "</p>")
    return intro + _table(header, body, raw=True)


# --- sections ----------------------------------------------------------------------------------


def _dataset_section(data: Path) -> str:
    out = "<h2 id='dataset'>Dataset</h2>"
    try:
        info = read_json(data / "dataset.json")
    except ImgclfError:
        return out + f"<p class='muted'>dataset folder {_e(str(data))} is not available.</p>"
    classes = info["classes"]
    rows = [[s, *[info["counts"][s].get(c, 0) for c in classes], sum(info["counts"][s].values())]
            for s in ("train", "val", "test")]
    out += (f"<p>{_e(str(data))}, from {_e(info.get('source', '?'))}: {info['total']} images in "
            f"{len(classes)} classes; rejected {info.get('rejected', 0)}, duplicates dropped "
            f"{info.get('duplicates', 0)}; split seed {info.get('seed')}.</p>"
            + _table(["split", *classes, "total"], rows))
    try:
        from .show import show

        with tempfile.TemporaryDirectory() as tmp:
            png = show(data, Path(tmp) / "grid.png", split="train", n=16)
            out += _figure(png, "16 random training images")
    except (ImgclfError, OSError) as e:
        out += f"<p class='muted'>sample grid unavailable: {_e(str(e))}</p>"
    return out


def _plan_html(plan: dict) -> str:
    """What the budget planner weighed and picked, why, and the flags that repeat the run without it."""
    out = ("<h2 id='plan'>Plan</h2>"
           f"<p>budget {float(plan['budget_seconds']):.0f} s: <b>{_e(plan.get('summary', ''))}</b>. "
           f"Rule: {_e(plan.get('rule', ''))}. The same run without a budget: "
           f"<code>imgclf train DATA {_e(plan.get('flags', ''))}</code></p>")
    cands = [[r["candidate"], _f(r["expected_accuracy"], 4) if r.get("expected_accuracy") else "not measured",
              r.get("expected_from") or "", r.get("estimated_seconds", ""), r.get("note", "")]
             for r in plan.get("candidates", [])]
    out += _table(["candidate", "expected accuracy", "from", "estimated s", ""], cands) if cands else ""
    rungs = [[r["model"], r["size"], f"{float(r['train_img_per_s']):.0f}", r.get("rate", ""), r.get("epochs_fit", "")]
             for r in plan.get("measured", [])]
    return out + (_table(["from scratch: model", "size", "train img/s", "rate", "epochs that fit"], rungs)
                  if rungs else "")


def _lr(v) -> str:
    """Learning rates to three significant digits (0.00999999 -> 0.01)."""
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def _metrics_html(m: dict) -> str:
    rows = [[c, _f(v["precision"], 3), _f(v["recall"], 3), _f(v["f1"], 3), v["support"]]
            for c, v in m["per_class"].items()]
    rows.append(["macro avg", _f(m["macro"]["precision"], 3), _f(m["macro"]["recall"], 3), _f(m["macro"]["f1"], 3),
                 m["n"]])
    head = (f"<p>accuracy <b>{m['accuracy']:.2%}</b> of {m['n']} test images"
            + (f", balanced accuracy {m['balanced_accuracy']:.2%}" if "balanced_accuracy" in m else "")
            + f", loss {m['loss']:.4f}</p>" + _table(["class", "precision", "recall", "F1", "support"], rows))
    from .evaluate import confused_pairs
    from .plots import MANY_CLASSES

    if len(m["classes"]) > MANY_CLASSES:
        pairs = confused_pairs(m["confusion_matrix"], m["classes"])
        return head + "<h3>Most confused pairs</h3>" + _table(
            ["true", "predicted as", "images", "share of the true class"],
            [[_e(t), _e(p), c, f"{share:.1%}"] for t, p, c, share in pairs])
    cm = [[c, *row] for c, row in zip(m["classes"], m["confusion_matrix"])]
    return (head + "<p class='muted'>confusion matrix: rows true, columns predicted</p>"
            + _table(["true \\ predicted", *m["classes"]], cm))


def _worst_html(run: Path, n: int = 16) -> str:
    """The n test images the model got most wrong (highest loss), with true and predicted labels."""
    preds = read_csv(run / "predictions.csv")
    preds.sort(key=lambda p: -float(p["loss"]))
    images, titles = [], []
    for p in preds:
        if len(images) == n:
            break
        try:
            images.append(read_and_decode(p["path"], 128))
        except DecodeError:
            continue
        titles.append(f"true {p['true']}\npred {p['pred']} ({float(p['prob']):.0%})")
    if not images:
        return "<p class='muted'>the test images are not available to show.</p>"
    from .plots import plot_grid

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "worst.png"
        plot_grid(images, titles, png)
        return _figure(png, f"{len(images)} highest-loss test images: true label, predicted label (probability)")


def _env_section(cfg: dict) -> str:
    env = cfg.get("environment", {})
    return "<h2 id='environment'>Environment</h2>" + _table(["", "value"], [[k, v] for k, v in env.items()])


# --- html helpers -------------------------------------------------------------------------------


def _e(s) -> str:
    return html.escape(str(s))


def _nav(ids: list[str]) -> str:
    return "<nav>" + "".join(f"<a href='#{i}'>{i}</a>" for i in ids) + "</nav>"


def _table(header: list, rows: list[list], raw: bool = False) -> str:
    cell = (lambda v: str(v)) if raw else _e
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(png: Path, caption: str, width: int | None = None) -> str:
    if not Path(png).is_file():
        return f"<p class='muted'>{_e(caption)}: not available</p>"
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    w = f" width='{width}'" if width else ""
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{_e(caption)}'{w}>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _f(v, digits: int) -> str:
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return "" if v in (None, "") else str(v)


def _pct(v) -> str:
    try:
        return f"{float(v):.2%}"
    except (TypeError, ValueError):
        return ""


def _status(run: Path) -> str:
    from .runfolder import read_status

    return read_status(run)["status"]


