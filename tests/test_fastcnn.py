"""fastcnn family, its bundled recipe (shifts, label smoothing, no decay on BN/bias, flip TTA) and the budget plan."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import ctrl_c_in_epoch, without_seconds

from imgclf.errors import ImgclfError
from imgclf.models import create_model, get_spec
from imgclf.train import TrainConfig, train


@pytest.mark.parametrize("name", ["fastcnn-s", "fastcnn-m", "fastcnn-l", "fastcnn-s-p3", "fastcnn-s-p4", "fastcnn-s-p3w"])
def test_fastcnn_takes_every_listed_size(name):
    spec = get_spec(name)
    assert spec.recipe is not None and spec.recipe.validate()
    m = create_model(name, 3).eval()
    for size in spec.sizes:
        assert m(torch.randn(2, 3, size, size)).shape == (2, 3)
    grid = {}  # the side of the grid the stages see (the stem's output), at the default size
    m.features[2].register_forward_hook(lambda mod, inp, out: grid.update(side=out.shape[-1]))  # None: output kept
    m(torch.randn(1, 3, spec.input_size, spec.input_size))
    assert grid["side"] ** 2 == spec.grid(spec.input_size)
    with pytest.raises(ImgclfError, match="--size 100"):
        spec.check_size(100)
    with pytest.raises(ImgclfError, match="only 224"):
        get_spec("seed-cnn").check_size(64)


def test_whitened_stem_decorrelates_the_patches_it_sees():
    from imgclf.models.fastcnn import WHITEN_EPS, FastCNN, whiten_stem
    from imgclf.optim import param_groups

    g = torch.Generator().manual_seed(0)  # smooth, colour-correlated images: neighbouring pixels covary
    base = torch.rand(40, 1, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=24, mode="bilinear") * torch.tensor([1.0, 0.8, 0.5])[:, None, None]
    x = x + 0.05 * torch.rand(40, 3, 24, 24, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) like a cache
    m = create_model("fastcnn-s-p3w", 2)
    get_spec("fastcnn-s-p3w").init_from_data(m, images)
    w = m.features[0].weight
    assert not w.requires_grad and all(w is not p for grp in param_groups(get_spec("fastcnn-s-p3w").recipe, m)
                                       for p in grp["params"])  # frozen: no optimizer ever sees it
    assert torch.equal(w[16:], -w[:16])  # each direction and its negative
    # The stem's output over every patch of the images: 16 uncorrelated channels, each of variance
    # var / (var + eps) for its direction's variance var (1 for a strong one, less for a weak one)
    out = torch.nn.functional.conv2d(torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255, w.double(), stride=3)
    cov = torch.cov(out[:, :16].permute(1, 0, 2, 3).reshape(16, -1), correction=0)
    patches = torch.as_tensor(images).permute(0, 3, 1, 2).double().div(255).unfold(2, 3, 3).unfold(3, 3, 3)
    var = torch.linalg.eigvalsh(torch.cov(patches.permute(1, 4, 5, 0, 2, 3).reshape(27, -1), correction=0))[-16:]
    assert torch.allclose(cov.diagonal(), var / (var + WHITEN_EPS), atol=1e-4)  # both in ascending order
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-4
    again = create_model("fastcnn-s-p3w", 2)
    whiten_stem(again, images)
    assert torch.equal(again.features[0].weight, w)  # no random draw: the same images, the same stem
    with pytest.raises(ValueError, match="12 directions"):  # a 2x2 stem has too few for 32 filters
        FastCNN(2, 32, (64,), 1, patch=2, whiten=True)


def test_whitened_stem_stays_as_the_training_images_set_it(prepared, tmp_path, monkeypatch):
    from imgclf.cache import open_cache
    from imgclf.errors import Interrupted
    from imgclf.manifest import load_dataset
    from imgclf.models.fastcnn import whiten_stem
    from imgclf.runfolder import load_model
    from imgclf.train import config_from_run

    recipe = replace(get_spec("fastcnn-s-p3w").recipe, batch_size=8)

    def run(out):
        return train(TrainConfig(data=prepared.root, out=tmp_path / out, model="fastcnn-s-p3w", recipe=recipe,
                                 epochs=3, workers=1, precision="fp32"))

    full = run("full")
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]
    expected = create_model("fastcnn-s-p3w", 2)
    whiten_stem(expected, open_cache(load_dataset(prepared.root), 96)["train"].images)
    model, _ = load_model(tmp_path / "full")
    assert torch.equal(model.features[0].weight, expected.features[0].weight)  # set from the data, never trained
    ctrl_c_in_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run("part")
    monkeypatch.undo()
    resumed = train(config_from_run(tmp_path / "part"), resume=True)
    assert without_seconds(resumed.history) == without_seconds(full.history) and resumed.metrics == full.metrics


def test_fastcnn_trains_with_its_bundled_recipe(prepared, tmp_path):
    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8)  # ~40 training images: 4 steps per epoch

    def run(name):  # 3 epochs (12 steps) left the eval-mode net at chance on 2 of 8 random datasets; 6: none
        return train(TrainConfig(data=prepared.root, out=tmp_path / name, model="fastcnn-s", recipe=recipe,
                                 epochs=6, workers=1, size=96))

    a, b = run("a"), run("b")
    conf = json.loads((tmp_path / "a" / "config.json").read_text())
    assert conf["recipe"]["name"] == "fastcnn" and conf["recipe"]["label_smoothing"] > 0
    # trained at 96, evaluated (and later predicting) at 96 x eval_scale 1.125 = 108, averaged with
    # the same image decoded at 96 and 120 (tta_scales 1 and 1.25), each with its mirror
    assert conf["model_meta"] == {**conf["model_meta"], "train_size": 96, "input_size": 108, "tta": True,
                                  "tta_sizes": [96, 120], "tta_decode": True}
    assert without_seconds(a.history) == without_seconds(b.history) and a.metrics == b.metrics  # deterministic on CPU
    with open(tmp_path / "a" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert a.metrics["accuracy"] == pytest.approx(np.mean([p["true"] == p["pred"] for p in preds]))
    assert a.metrics["accuracy"] > 0.9  # colour classes: trivially learnable
    # predict on the files sees the same views as the test pass on the cache: the same probabilities
    # (measured 3e-7 apart; 5e-5 when predict left out the training-size views)
    from imgclf.predict import predict

    got = predict(tmp_path / "a", [p["path"] for p in preds])
    for p, g in zip(preds, got):
        assert g["class"] == p["pred"] and g["probs"][p["pred"]] == pytest.approx(float(p["prob"]), abs=1e-5)
    # the last epoch's validation used every view: it scores the saved model as `evaluate` does
    from imgclf.evaluate import evaluate_run

    val = evaluate_run(tmp_path / "a", "val")
    assert a.history[-1]["val_acc"] == pytest.approx(val["accuracy"]) and a.history[-1]["val_loss"] == pytest.approx(
        val["loss"], abs=1e-6)
