"""fastcnn family, its bundled recipe (shifts, label smoothing, no decay on BN/bias, flip TTA) and the budget plan."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import without_seconds

from imgclf.errors import ImgclfError
from imgclf.models import create_model, get_spec
from imgclf.train import TrainConfig, train


@pytest.mark.parametrize("name", ["fastcnn-s", "fastcnn-m", "fastcnn-l", "fastcnn-s-p3", "fastcnn-s-p4"])
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
