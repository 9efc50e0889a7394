"""Evaluation on a split, and on any labelled folder (class folders or Kaggle-style names)."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import COLORS, make_image

from imgclf.errors import ImgclfError
from imgclf.evaluate import evaluate_folder
from imgclf.models import create_model
from imgclf.views import tta_logits


def test_a_raw_class_folder_is_scored_whole_with_classes_matched_by_name(small_run, tmp_path):
    src = tmp_path / "new"
    for c in ("Red", "blue"):  # a subset of the run's classes, another capitalisation
        for i in range(4):
            make_image(src / c / f"{i}.jpg", COLORS[c.lower()], seed=100 + i)
    (src / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    m, out = evaluate_folder(small_run, src)
    assert m["n"] == 8 and m["rejected"] == 1 and m["accuracy"] == 1.0  # colour classes: trivially right
    assert m["per_class"]["green"]["support"] == 0 and m["classes"] == ["blue", "green", "red"]
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 8 and {r["true"] for r in rows} == {"red", "blue"}
    assert [r["path"] for r in csv.DictReader(open(out / "rejected.csv"))] == [str(src / "blue" / "broken.jpg")]
    assert json.loads((out / "metrics.json").read_text())["n"] == 8 and (out / "confusion.png").is_file()


def test_kaggle_style_names_and_unknown_classes(small_run, tmp_path):
    flat = tmp_path / "flat"
    for i in range(3):
        make_image(flat / f"green.{i}.jpg", COLORS["green"], seed=i)
        make_image(flat / f"RED_{i}.png", COLORS["red"], seed=i, fmt="PNG")
    m, _ = evaluate_folder(small_run, flat)
    assert m["n"] == 6 and m["accuracy"] == 1.0
    make_image(flat / "purple.9.jpg", (120, 0, 120))
    with pytest.raises(ImgclfError, match="classes the run does not know: purple"):
        evaluate_folder(small_run, flat)


def test_cli_evaluate_on_a_folder(small_run, tmp_path, capsys):
    from imgclf.cli import main

    src = tmp_path / "more"
    for i in range(2):
        make_image(src / "blue" / f"{i}.jpg", COLORS["blue"], seed=i)
    assert main(["evaluate", str(small_run), str(src)]) == 0
    assert "accuracy: 100.00% of 2 images" in capsys.readouterr().out
    assert (small_run / "eval-more" / "metrics.json").is_file()


def test_predict_logits_reads_the_views_beside_the_split(prepared):
    from imgclf.cache import open_cache
    from imgclf.evaluate import predict_logits
    from imgclf.load import input_fn
    from imgclf.manifest import load_dataset

    ds = load_dataset(prepared.root)
    big, small = open_cache(ds, 36, workers=1)["val"], open_cache(ds, 32, workers=1)["val"]
    torch.manual_seed(0)
    m = create_model("fastcnn-s", 2).eval()
    f = input_fn(torch.device("cpu"), (0.5,) * 3, (0.25,) * 3, False)
    got = predict_logits(m, big, f, torch.device("cpu"), "fp32", batch_size=3, tta=True, views=[small])
    with torch.no_grad():
        want = tta_logits(m, f(torch.from_numpy(np.array(big.images))), True,
                          more=[f(torch.from_numpy(np.array(small.images)))])
    assert np.allclose(got, want.numpy(), atol=1e-5)  # batch by batch, row for row
    with pytest.raises(ImgclfError, match="other images"):
        predict_logits(m, big, f, torch.device("cpu"), "fp32", views=[open_cache(ds, 32, workers=1)["test"]])


def test_metrics_agree_with_scikit_learn():
    """compute_metrics counts in numpy what scikit-learn's metrics define, absent and never-predicted
    classes included (zero_division=0, the macro mean over every class)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    from imgclf.evaluate import compute_metrics

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d", "e"]
    for n in (1, 7, 200):
        y, p = rng.integers(0, 4, n), rng.integers(0, 3, n)  # "e" never occurs; "d" is never predicted
        m, labels = compute_metrics(y, p, classes), list(range(5))
        pr, rc, f1, s = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
        macro = precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)[:3]
        assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
        assert [m["macro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(list(macro))
        for i, c in enumerate(classes):
            assert [m["per_class"][c][k] for k in ("precision", "recall", "f1")] == pytest.approx([pr[i], rc[i], f1[i]])
            assert m["per_class"][c]["support"] == s[i]
        assert m["confusion_matrix"] == confusion_matrix(y, p, labels=labels).tolist()
