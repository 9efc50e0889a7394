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

    tmp = tmp_path_factory.mktemp("report")
    prepare(PrepareConfig(src=make_folder(tmp / "src", n=14), out=tmp / "data", workers=1))
    recipes = [Recipe("sgd", "sgd", lr=0.05, batch_size=8), Recipe("adam", "adam", lr=0.002, batch_size=8)]
    compare(CompareConfig(data=tmp / "data", out=tmp / "cmp", recipes=recipes, epochs=2, seeds=2, workers=1,
                          target=0.6))
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
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
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
