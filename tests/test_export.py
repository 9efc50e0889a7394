"""Export: ONNX and .pt2 graphs that take uint8 pixels, verified against PyTorch on the test split;
the torch-free path runs with torch unimportable."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from imgclf.errors import ImgclfError

onnx = pytest.importorskip("onnx", reason="pip install 'imgclf[export]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'imgclf[export]'")


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    from imgclf.export import export

    return export(small_run, tmp_path_factory.mktemp("export") / "onnx")


def test_onnx_export_is_verified_and_self_describing(exported, small_run):
    v = exported.verification
    assert v["passed"] and v["flips"] == 0 and v["max_prob_diff"] < 1e-4 and v["n"] == len(
        list(csv.DictReader(open(small_run / "predictions.csv"))))
    # fp32 run, all views: the reference is the run's own metrics.json
    assert v["reference"] == "metrics.json" and v["accuracy_export"] == v["accuracy_run"]
    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    side = json.loads(exported.sidecar.read_text())
    assert json.loads(props["classes"]) == side["classes"] == ["blue", "green", "red"]
    assert [(i["name"], i["size"]) for i in side["inputs"]] == [("image", 72), ("image_64", 64), ("image_80", 80)]
    assert side["verification"]["passed"] and "resize" in side["preprocessing"]
    sess = ort.InferenceSession(str(exported.path))
    assert [(i.name, i.type) for i in sess.get_inputs()] == [("image", "tensor(uint8)")] + [
        (f"image_{s}", "tensor(uint8)") for s in (64, 80)]
    for batch in (1, 5):  # dynamic batch
        feeds = {i.name: np.zeros((batch, i.shape[1], i.shape[2], 3), np.uint8) for i in sess.get_inputs()}
        probs = sess.run(["probs"], feeds)[0]
        assert probs.shape == (batch, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_fixed_batch_single_view_and_pt2(small_run, tmp_path):
    from imgclf.export import export

    one = export(small_run, tmp_path / "one", views="none", dynamic_batch=False)
    sess = ort.InferenceSession(str(one.path))
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("image", [1, 72, 72, 3])]
    assert one.verification["passed"] and one.verification["reference"] == "pytorch-fp32"
    pt2 = export(small_run, tmp_path / "pt2", fmt="pt2", views="mirror")
    assert pt2.path.name == "model.pt2" and pt2.verification["passed"] and pt2.verification["flips"] == 0


def test_a_wrong_graph_fails_verification_loudly(small_run, tmp_path, monkeypatch):
    from imgclf import export as ex

    right = ex.ExportGraph.forward

    def swapped(self, *images):  # the classes' order reversed: every top-1 answer flips
        return right(self, *images).flip(1)

    monkeypatch.setattr(ex.ExportGraph, "forward", swapped)
    with pytest.raises(ImgclfError, match="does not reproduce the run"):
        ex.export(small_run, tmp_path / "bad", views="none")
    assert not json.loads((tmp_path / "bad" / "model.json").read_text())["verification"]["passed"]


def test_existing_export_is_not_overwritten(exported, small_run):
    from imgclf.export import export

    with pytest.raises(ImgclfError, match="not empty"):
        export(small_run, exported.path.parent)
    with pytest.raises(ImgclfError, match="--format"):
        export(small_run, exported.path.parent / "x", fmt="tflite")


def test_torch_free_prediction(exported, small_run):
    """predict_onnx.py beside the model classifies the run's test files with torch unimportable."""
    rows = list(csv.DictReader(open(small_run / "predictions.csv")))
    script = exported.path.parent / "predict_onnx.py"
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            f"sys.argv = ['predict_onnx.py', {str(exported.path)!r}, *{[r['path'] for r in rows]!r}]\n"
            f"exec(compile(open({str(script)!r}).read(), 'predict_onnx.py', 'exec'))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=exported.path.parent)
    assert p.returncode == 0, p.stderr
    got = [line.split("\t") for line in p.stdout.splitlines()]
    assert [g[0] for g in got] == [r["path"] for r in rows]
    agree = np.mean([g[1] == r["pred"] for g, r in zip(got, rows)])
    assert agree >= 0.95, agree  # Pillow's resize rounds a level apart in places; the classes still agree


def test_cli_export(small_run, tmp_path):
    from imgclf.cli import main

    assert main(["export", str(small_run), "--out", str(tmp_path / "e"), "--views", "mirror"]) == 0
    assert (tmp_path / "e" / "model.onnx").is_file()
    assert main(["export", str(small_run), "--out", str(tmp_path / "e")]) == 2  # exists: one-line error
