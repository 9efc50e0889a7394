"""The HTML report: self-contained, and it renders in a real headless browser without errors."""

import json
import os
import re
import shutil

import pytest

from imgclf.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    from conftest import make_folder

    from imgclf.compare import CompareConfig, compare
    from imgclf.prepare import PrepareConfig, prepare
    from imgclf.recipes import Recipe
    from imgclf.train import TrainConfig

    tmp = tmp_path_factory.mktemp("report")
    prepare(PrepareConfig(src=make_folder(tmp / "src", n=14), out=tmp / "data", workers=1))
    recipes = [Recipe("sgd", "sgd", lr=0.05, batch_size=8), Recipe("adam", "adam", lr=0.002, batch_size=8)]
    compare(CompareConfig(base=TrainConfig(data=tmp / "data", out=tmp / "cmp", epochs=2, workers=1), recipes=recipes, seeds=2, target=0.6))
    return tmp / "cmp"


def test_report_is_self_contained(comparison):
    html = (comparison / "report.html").read_text()
    for section in ("Dataset", "Recipes", "Ranking", "Pairwise tests", "Learning curves", "Confusion matrices",
                    "Worst test images", "Environment"):
        assert section in html, section
    srcs = re.findall(r"<img[^>]+src='([^']+)'", html)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html  # nothing to fetch: readable offline


def test_report_rebuilds_from_files(comparison, tmp_path):
    copy = tmp_path / "cmp"
    shutil.copytree(comparison, copy)
    (copy / "report.html").unlink()
    assert build_report(copy).is_file()
    run = copy / "runs" / "adam-seed0"
    assert "Test metrics" in build_report(run).read_text()


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no chromium here (CI installs it)")
def test_report_renders_in_headless_chromium(comparison):
    from conftest import chromium_page
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = chromium_page(p)
        errors = page.errors
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((comparison / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        shot = comparison / "report-screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    assert shot.stat().st_size > 10_000


def test_summary_statistics_match_a_recount(comparison):
    import csv

    import numpy as np
    from scipy import stats

    summary = {r["recipe"]: r for r in csv.DictReader((comparison / "summary.csv").open())}
    for recipe in ("sgd", "adam"):
        accs = [json.loads((comparison / "runs" / f"{recipe}-seed{s}" / "metrics.json").read_text())["accuracy"]
                for s in (0, 1)]
        row = summary[recipe]
        assert float(row["test_accuracy"]) == pytest.approx(np.mean(accs))
        assert float(row["test_accuracy_std"]) == pytest.approx(np.std(accs, ddof=1))
        half = stats.t.ppf(0.975, 1) * np.std(accs, ddof=1) / np.sqrt(2)
        assert float(row["test_accuracy_ci_low"]) == pytest.approx(np.mean(accs) - half)
        assert float(row["test_accuracy_ci_high"]) == pytest.approx(np.mean(accs) + half)
        assert row["seeds"] == "2"


def test_many_classes_get_confused_pairs_and_a_normalised_matrix(tmp_path, monkeypatch):
    import numpy as np

    from imgclf import plots
    from imgclf.evaluate import confused_pairs
    from imgclf.report import _metrics_html

    classes = [f"c{i}" for i in range(12)]
    cm = np.diag(np.full(12, 20))
    cm[3, 5], cm[7, 1], cm[0, 2] = 6, 9, 1
    assert confused_pairs(cm, classes, k=2) == [("c7", "c1", 9, 9 / 29), ("c3", "c5", 6, 6 / 26)]
    m = {"accuracy": 0.9, "balanced_accuracy": 0.9, "n": int(cm.sum()), "loss": 0.3, "classes": classes,
         "confusion_matrix": cm.tolist(), "macro": {"precision": 1, "recall": 1, "f1": 1},
         "per_class": {c: {"precision": 1, "recall": 1, "f1": 1, "support": 20} for c in classes}}
    page = _metrics_html(m)
    assert "Most confused pairs" in page and "true \\ predicted" not in page and "balanced accuracy" in page
    shown = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: shown.setdefault("im", fig.axes[0].images[0].get_array()))
    plots.plot_confusion(cm, classes, tmp_path / "cm.png")
    assert shown["im"].max() <= 1 and shown["im"][7, 1] == pytest.approx(9 / 29)  # rows are shares


def test_accuracy_axis_is_zoomed_to_the_data(tmp_path, monkeypatch):
    from imgclf import plots

    got = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: got.setdefault("ylim", fig.axes[0].get_ylim()))
    hist = [{"epoch": e, "train_acc": 0.93 + e / 100, "val_acc": 0.92 + e / 100, "train_loss": 0, "val_loss": 0}
            for e in range(1, 4)]
    plots.plot_history(hist, "acc", tmp_path / "a.png")
    lo, hi = got["ylim"]
    assert 0.9 < lo < 0.93 and 0.96 <= hi <= 1.005


def test_plan_and_learning_rates_in_the_report():
    from imgclf.report import _lr, _plan_html

    assert _lr(0.009999999776) == "0.01" and _lr(0.05) == "0.05" and _lr(1e-3) == "0.001"
    plan = {"budget_seconds": 300, "chosen": {"model": "fastcnn-s-p3", "size": 96, "epochs": 13},
            "summary": "fastcnn-s-p3 from scratch at 96 px for 13 epochs", "rule": "most accurate that fits",
            "flags": "--model fastcnn-s-p3 --size 96 --epochs 13 --batch-size 128",
            "candidates": [{"candidate": "efficientnet-lite1 probe", "expected_accuracy": 0.99,
                            "expected_from": "99.00% measured on 10,000 images", "estimated_seconds": 400.0,
                            "note": "needs ~400 s, 280 s left"},
                           {"candidate": "from scratch", "expected_accuracy": 0.95, "expected_from": "measured"}],
            "measured": [{"model": "fastcnn-s-p3", "size": 96, "train_img_per_s": 480.1, "rate": "measured",
                          "epochs_fit": 13}]}
    page = _plan_html(plan)
    assert "--model fastcnn-s-p3 --size 96 --epochs 13 --batch-size 128" in page
    assert "needs ~400 s, 280 s left" in page and "0.9900" in page and "480" in page
