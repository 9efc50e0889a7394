"""`imgclf demo`: the whole pipeline on a real dataset that needs no download.

scikit-learn ships 1,797 8x8 handwritten digits; they are written out as PNG files in class
folders, exactly like a user's own images, and go through prepare, show, compare of the four
tutorial presets, evaluate and predict.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import ImgclfError
from .files import MARKER


def write_digits(root: Path) -> int:
    """Digits as 32x32 grayscale PNGs (8x8 upscaled, nearest), one folder per digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        a = (img * (255.0 / 16.0)).round().astype(np.uint8)
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "L").resize((32, 32), Image.NEAREST).save(folder / f"{i:04d}.png")
    return len(d.target)


def _claim(out: Path) -> None:
    """The demo folder is the demo's own: replace an earlier demo, refuse anything else."""
    if out.exists() and any(out.iterdir()):
        marker = out / MARKER
        if not (marker.is_file() and marker.read_text().strip() == "demo"):
            raise ImgclfError(f"{out} exists and is not an imgclf demo folder; pass --out with a new path")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("demo\n")


def run_demo(out: Path, epochs: int = 2, report: Callable = print, ranking: Callable | None = None,
             metrics: Callable | None = None) -> list[dict]:
    from .compare import CompareConfig, compare
    from .predict import predict
    from .prepare import PrepareConfig, prepare, summary_rows
    from .show import show
    from .train import evaluate_run

    t0 = time.perf_counter()
    out = Path(out)
    _claim(out)
    n = write_digits(out / "digits")
    report(f"[bold]1. images[/bold]: wrote {n} digit images to {out / 'digits'}/<0-9>/")
    ds = prepare(PrepareConfig(src=out / "digits", out=out / "data"))
    header, rows = summary_rows(ds)
    report(f"[bold]2. prepare[/bold]: {' / '.join(f'{r[0]} {r[-1]}' for r in rows)} images; "
           f"rejected {ds.info['rejected']}, duplicates {ds.info['duplicates']}")
    show(out / "data", out / "batch.png", split="train", n=16)
    report(f"[bold]3. show[/bold]: {out / 'batch.png'}")
    report(f"[bold]4. compare[/bold]: seed-cnn, 4 optimizer presets, {epochs} epochs each")
    ranked = compare(CompareConfig(data=out / "data", out=out / "compare", epochs=epochs))
    if ranking:
        ranking(ranked, "ranking on the test split")
    best = next((r for r in ranked if r["status"] == "done"), None)
    if best is None:
        raise ImgclfError("every recipe diverged in the demo; please report this")
    run = out / "compare" / "runs" / best["recipe"]
    m = evaluate_run(run, "test")
    report(f"[bold]5. evaluate[/bold] best recipe, {best['recipe']}:")
    if metrics:
        metrics(m, f"{run}: test metrics")
    sample = [out / "digits" / str(k) / sorted(p.name for p in (out / "digits" / str(k)).iterdir())[0]
              for k in (3, 7)]
    preds = predict(run, sample)
    report("[bold]6. predict[/bold]: " + ", ".join(f"{Path(p['path']).parent.name}/{Path(p['path']).name} -> "
                                                   f"{p['class']} ({p['prob']:.0%})" for p in preds))
    report(f"done in {time.perf_counter() - t0:.0f} s; everything is under {out}/ "
           f"(compare/summary.csv, compare/accuracy.png, compare/loss.png, batch.png)")
    return ranked
