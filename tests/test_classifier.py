"""The embeddable classifier: the run's preprocessing and views, any kind of image input."""

import csv

import numpy as np
import pytest
from PIL import Image

from imgclf.classifier import Classifier
from imgclf.errors import DecodeError, ImgclfError


def _preds(run):
    with open(run / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_reproduces_predictions_csv_on_the_test_files(small_run):
    clf = Classifier(small_run)
    assert clf.sizes == [72, 64, 80] and clf.mirror  # eval size 1.125 x 64, decoded at 64 and 80 too: 6 views
    rows = _preds(small_run)
    probs = clf.predict_proba([r["path"] for r in rows])
    want = np.array([[float(r[f"p_{c}"]) for c in clf.classes] for r in rows])
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_paths_bytes_pil_and_arrays_agree(small_run, tmp_path):
    clf = Classifier(small_run, batch_size=2)
    path = _preds(small_run)[0]["path"]
    png = tmp_path / "x.png"  # lossless: the decoded pixels are the same whichever way they come in
    Image.open(path).convert("RGB").save(png)
    arr = np.asarray(Image.open(png))
    inputs = [png, png.read_bytes(), Image.open(png), arr, str(png)]
    probs = clf.predict_proba(inputs)
    np.testing.assert_allclose(probs, np.repeat(probs[:1], len(inputs), 0), atol=1e-6)
    gray = clf.predict_proba([arr[:, :, 0], np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])])
    assert gray.shape == (2, 3)
    np.testing.assert_allclose(gray[1], probs[0], atol=1e-6)  # opaque alpha changes nothing


def test_predict_keeps_bad_inputs_on_their_own_line(small_run, tmp_path):
    clf = Classifier(small_run, batch_size=2)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = _preds(small_run)[0]["path"]
    res = clf.predict([good, bad, np.zeros((4, 4), np.float32), tmp_path / "missing.png", good], top_k=3)
    assert [bool(r["error"]) for r in res] == [False, True, True, True, False]
    assert "not an image" in res[1]["error"] and "uint8" in res[2]["error"]
    # the same image in another batch: the same answer, to float rounding (fp32 kernels differ by batch size)
    assert res[0]["class"] == res[4]["class"] and [c for c, _ in res[0]["top_k"]] == [c for c, _ in res[4]["top_k"]]
    assert res[0]["probs"] == pytest.approx(res[4]["probs"], rel=1e-5, abs=1e-7)
    assert [c for c, _ in res[0]["top_k"]][0] == res[0]["class"] and len(res[0]["top_k"]) == 3
    assert [p for _, p in res[0]["top_k"]] == sorted((p for _, p in res[0]["top_k"]), reverse=True)
    with pytest.raises(DecodeError, match="bad.jpg"):
        clf.predict_proba([bad])


def test_views_choice(small_run):
    path = _preds(small_run)[0]["path"]
    none, mirror = Classifier(small_run, views="none"), Classifier(small_run, views="mirror")
    assert none.sizes == mirror.sizes == [72] and not none.mirror and mirror.mirror
    assert none.predict_proba([path]).shape == mirror.predict_proba([path]).shape == (1, 3)
    with pytest.raises(ImgclfError, match="views"):
        Classifier(small_run, views="some")
