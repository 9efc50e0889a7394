"""End to end on real photos from ../shared/data (skipped when that folder is absent)."""

import csv
import json

import numpy as np
import pytest
from conftest import copy_pets

from imgclf.compare import CompareConfig, compare
from imgclf.prepare import PrepareConfig, prepare
from imgclf.recipes import PRESETS
from imgclf.train import TrainConfig


@pytest.mark.slow
def test_petimages_subset_compare_one_epoch(shared_data, tmp_path):
    src = copy_pets(shared_data, tmp_path / "pets", 150)
    ds = prepare(PrepareConfig(src=src, out=tmp_path / "data", workers=2))
    assert ds.classes == ["Cat", "Dog"] and len(ds.rows) >= 290
    rows = compare(CompareConfig(base=TrainConfig(data=tmp_path / "data", out=tmp_path / "cmp", epochs=1, workers=2), recipes=[PRESETS[n] for n in ("vanilla-sgd", "minibatch-sgd", "momentum", "adam")]))
    assert [r["status"] for r in rows] == ["done"] * 4
    for r in rows:
        m = json.loads((tmp_path / "cmp" / "runs" / r["recipe"] / "metrics.json").read_text())
        preds = list(csv.DictReader((tmp_path / "cmp" / "runs" / r["recipe"] / "predictions.csv").open()))
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["accuracy"] == pytest.approx(np.mean([p["true"] == p["pred"] for p in preds]))
        assert r["test_accuracy"] == m["accuracy"]


def test_kaggle_sample_labels_from_filename(shared_data, tmp_path):
    ds = prepare(PrepareConfig(src=shared_data / "kaggle-sample", out=tmp_path / "k", labels_from_filename=True,
                               workers=2))
    counts = {c: sum(ds.info["counts"][s][c] for s in ("train", "val", "test")) for c in ds.classes}
    assert ds.classes == ["cat", "dog"]
    assert counts["cat"] + counts["dog"] + ds.info["duplicates"] + ds.info["rejected"] == 200
    assert counts == {"cat": 100, "dog": 100}
