"""fastcnn family, its bundled recipe (shifts, label smoothing, no decay on BN/bias, flip TTA) and the budget plan."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.evaluate import tta_logits, view_sizes
from imgclf.load import Augment, augment, epoch_size, resize_batch
from imgclf.models import create_model, get_spec
from imgclf.models.fastcnn import grid_pixels
from imgclf.recipes import Recipe, build_optimizer, eval_sizes, param_groups, recipe_from_dict
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
    assert grid["side"] ** 2 == grid_pixels(name, spec.input_size)
    with pytest.raises(ImgclfError, match="--size 100"):
        spec.check_size(100)
    with pytest.raises(ImgclfError, match="only 224"):
        get_spec("seed-cnn").check_size(64)


def test_weight_decay_skips_norm_and_bias():
    m = create_model("fastcnn-s", 2)
    r = replace(get_spec("fastcnn-s").recipe, muon=None)  # with Muon: test_muon.py
    groups = param_groups(r, m)
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    opt = build_optimizer(r, groups)
    assert opt.param_groups[0]["weight_decay"] == r.weight_decay and opt.param_groups[0]["nesterov"]
    assert len(param_groups(Recipe("x", "sgd", lr=0.1), m)) == 1  # default: decay everything, like torch


@pytest.mark.parametrize("bad, msg", [(dict(label_smoothing=1.0), "label_smoothing"), (dict(warmup=1.5), "warmup"),
                                      (dict(translate=-0.1), "translate"), (dict(ema=1.0), "ema"),
                                      (dict(eval_scale=3), "eval_scale"), (dict(progressive=1.0), "progressive"),
                                      (dict(tta_scales=(1.0, 3.0)), "tta_scales"), (dict(tta_scales=1.25), "tta_scales")])
def test_recipe_rejects_bad_new_fields(bad, msg):
    with pytest.raises(ImgclfError, match=msg):
        Recipe("x", "sgd", lr=0.1, **bad).validate()


def test_eval_sizes_are_the_scaled_views_without_repeats():
    r = Recipe("x", "sgd", lr=0.1, eval_scale=1.125, tta_scales=(1.0, 1.25, 1.125, 1.0))
    assert eval_sizes(r, 64) == (72, [64, 80])  # 1.125 is the evaluation size itself, 1.0 listed once
    assert eval_sizes(r, 224, any_size=False) == (224, [])  # a fixed-size model: one size
    assert eval_sizes(Recipe("x", "sgd", lr=0.1), 96) == (96, [])
    # a run saved before tta_scales: its recipe said tta_train_size, which was the training size alone
    old = {**r.to_dict(), "tta_train_size": True}
    del old["tta_scales"]
    assert recipe_from_dict(old).tta_scales == (1.0,) and recipe_from_dict(r.to_dict()) == r


def test_shifts_move_whole_images_and_fill_with_zeros():
    x = torch.zeros(64, 16, 16, 3, dtype=torch.uint8)
    x[:, 8, 8] = 255  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    y = augment(x, Augment(hflip=False, translate=0.25), g)  # up to 4 px each way
    assert y.shape == x.shape and y.dtype == torch.uint8
    pos = [tuple(int(v) for v in torch.nonzero(img[..., 0])[0]) for img in y]
    shifts = {(r - 8, c - 8) for r, c in pos}
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in shifts) and len(shifts) > 10  # random per image
    assert all(int((img > 0).sum()) == 3 for img in y)  # nothing else appears
    z = augment(x, Augment(hflip=False, translate=0.25), torch.Generator().manual_seed(0))
    assert torch.equal(y, z)  # seeded: the same shifts again
    # real content, not square: every output is exactly one window of the zero-padded image
    x = torch.randint(1, 256, (16, 12, 20, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = augment(x, Augment(hflip=False, translate=0.25), g)  # p = round(0.25 * 12) = 3
    padded = torch.nn.functional.pad(x, (0, 0, 3, 3, 3, 3))
    for img, src in zip(y, padded):
        assert sum(torch.equal(img, src[dy:dy + 12, dx:dx + 20]) for dy in range(7) for dx in range(7)) == 1


def test_flip_tta_averages_probabilities():
    torch.manual_seed(0)
    m = create_model("fastcnn-s", 2).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        p = tta_logits(m, x, True).softmax(1)
        want = (m(x).softmax(1) + m(x.flip(3)).softmax(1)) / 2
        assert torch.allclose(p, want, atol=1e-6)
        assert torch.equal(tta_logits(m, x, False), m(x))


def test_tta_views_add_other_sizes_and_their_mirrors():
    torch.manual_seed(0)
    m = create_model("fastcnn-s", 2).eval()
    x, other = torch.randn(4, 3, 72, 72), torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        p = tta_logits(m, x, True, [64]).softmax(1)  # resized on the batch (runs before tta_decode)
        small = resize_batch(x, 64)
        views = [x, x.flip(3), small, small.flip(3)]
        assert torch.allclose(p, sum(m(v).softmax(1) for v in views) / 4, atol=1e-6)
        assert torch.allclose(tta_logits(m, x, False, [64]).softmax(1), (m(x).softmax(1) + m(small).softmax(1)) / 2,
                              atol=1e-6)
        p = tta_logits(m, x, True, more=[other]).softmax(1)  # decoded at 64 px: given as is
        views = [x, x.flip(3), other, other.flip(3)]
        assert torch.allclose(p, sum(m(v).softmax(1) for v in views) / 4, atol=1e-6)


def test_view_sizes_decode_for_new_runs_and_resize_for_old_ones():
    assert view_sizes({"tta_sizes": [64], "tta_decode": True}) == ([64], [])
    assert view_sizes({"tta_sizes": [64]}) == ([], [64])  # model.json written before tta_decode
    assert view_sizes({}) == ([], [])


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


def test_batches_with_index_name_the_rows_they_hold(prepared):
    from imgclf.cache import open_cache
    from imgclf.load import batches
    from imgclf.manifest import load_dataset

    split = open_cache(load_dataset(prepared.root), 32, workers=1)["train"]
    got = list(batches(split, 7, shuffle=True, generator=torch.Generator().manual_seed(0), with_index=True))
    rows = torch.cat([r for _, _, r in got])
    assert sorted(rows.tolist()) == list(range(len(split)))  # every row once
    for x, y, r in got:
        assert torch.equal(x, torch.from_numpy(split.images[r.numpy()])) and torch.equal(y, torch.from_numpy(
            split.labels[r.numpy()]))


def test_alternating_flips_mirror_each_image_every_other_epoch(prepared, tmp_path, monkeypatch):
    import imgclf.train as train_mod

    log = []  # per batch: (epoch's batch rows, which of them were mirrored)
    real_batches, real_augment = train_mod.batches, train_mod.augment

    def spy_batches(*a, **k):
        for x, y, rows in real_batches(*a, **k):
            log.append([rows])
            yield x, y, rows

    def spy_augment(x, aug, gen, hflips=None):
        log[-1].append(hflips)
        return real_augment(x, aug, gen, hflips)

    monkeypatch.setattr(train_mod, "batches", spy_batches)
    monkeypatch.setattr(train_mod, "augment", spy_augment)
    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8, alternate_flips=True)
    r = train(TrainConfig(data=prepared.root, out=tmp_path / "r", model="fastcnn-s", recipe=recipe, epochs=3,
                          workers=1, size=64, report=False))
    steps = r.history[0]["steps"]
    log = [entry for entry in log if len(entry) == 2]  # training batches (evaluation does not augment)
    sides = [{int(i): bool(f) for rows, flips in log[e * steps:(e + 1) * steps] for i, f in zip(rows, flips)}
             for e in range(3)]
    both = set(sides[0]) & set(sides[1]) & set(sides[2])  # drop_last leaves a few images out of an epoch
    assert len(both) > 10
    assert all(sides[0][i] != sides[1][i] and sides[2][i] == sides[0][i] for i in both)
    assert 0.2 < np.mean([sides[0][i] for i in both]) < 0.8  # the first side is a coin per image


def test_progressive_sizes_grow_from_start_fraction_to_full_size():
    sizes = [epoch_size(96, e, 20, 2 / 3) for e in range(1, 21)]
    assert sizes[:10] == [64] * 10  # first half at 2/3 of the size
    assert sizes[17:] == [96] * 3  # full size from 85% of the epochs
    assert sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert [epoch_size(96, e, 20, None) for e in (1, 20)] == [96, 96]
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = resize_batch(x, 64)
    assert y.shape == (2, 3, 64, 64) and y.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(x, 96) is x
    assert torch.allclose(resize_batch(torch.full((1, 3, 96, 96), 0.7), 48), torch.tensor(0.7))  # flat stays flat


def test_progressive_training_feeds_the_scheduled_sizes(prepared, tmp_path, monkeypatch):
    import imgclf.train as train_mod

    seen = []  # the side of the cached images each epoch trains on

    def spy(model, split, *args, **kwargs):
        seen.append(split.images.shape[1])
        return real(model, split, *args, **kwargs)

    real = train_mod._train_epoch
    monkeypatch.setattr(train_mod, "_train_epoch", spy)
    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8, progressive=0.5)
    train(TrainConfig(data=prepared.root, out=tmp_path / "p", model="fastcnn-s", recipe=recipe, epochs=4,
                      workers=1, size=96))
    assert seen == [48, 48, 48, 80]  # 48 px for half the epochs, then ramping to 96, each from its own cache
    assert json.loads((tmp_path / "p" / "config.json").read_text())["model_meta"]["input_size"] == 108


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
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history) and a.metrics == b.metrics  # deterministic on CPU
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
    from imgclf.train import evaluate_run

    val = evaluate_run(tmp_path / "a", "val")
    assert a.history[-1]["val_acc"] == pytest.approx(val["accuracy"]) and a.history[-1]["val_loss"] == pytest.approx(
        val["loss"], abs=1e-6)


def test_budget_plan_picks_a_rung_and_records_it(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    # Two cheap rungs, at most 3 epochs: this checks the mechanism; BENCHMARKS.md holds the real ladder's figures.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-m", 96, 10_000), ("fastcnn-s", 160, 10_000), ("fastcnn-s-p3", 96, 1)])
    monkeypatch.setattr(plan, "MAX_EPOCHS", 3)
    probed = []
    real_measure = plan.measure_rate
    monkeypatch.setattr(plan, "measure_rate", lambda name, size, *a, **k: probed.append((name, size))
                        or real_measure(name, size, *a, **k))
    r = train(TrainConfig(data=prepared.root, out=tmp_path / "auto", model="auto", max_seconds=60, workers=1))
    conf = json.loads((tmp_path / "auto" / "config.json").read_text())
    p = conf["plan"]
    assert p["budget_seconds"] == 60 and conf["model"] == p["chosen"]["model"]
    assert conf["epochs"] == p["chosen"]["epochs"] >= 1 and conf["size"] == p["chosen"]["size"]
    assert all(m["train_img_per_s"] > 0 for m in p["measured"])
    assert [(m["model"], m["size"], m["rate"]) for m in p["measured"]] == [
        ("fastcnn-m", 96, "measured"),  # other stages: probed (it cannot fit 10k epochs)
        ("fastcnn-s", 160, "estimated"),  # the cheapest rung's stages: estimated from it, not probed
        ("fastcnn-s-p3", 96, "measured"),
    ]
    est = p["measured"][1]["train_img_per_s"]  # 160 px through a 2x2 stem: a 80x80 grid, 96 / 3 = 32 for the probe
    assert est == pytest.approx(p["measured"][2]["train_img_per_s"] * 32**2 / 80**2, rel=0.01)
    assert probed == [("fastcnn-s-p3", 96), ("fastcnn-m", 96)]
    assert conf["model"] == "fastcnn-s-p3" and conf["epochs"] == 3 and conf["recipe"]["name"] == "fastcnn"
    assert r.status == "done" and len(r.history) == 3
    with pytest.raises(ImgclfError, match="seconds=0.5 is too short"):
        train(TrainConfig(data=prepared.root, out=tmp_path / "short", model="auto", max_seconds=0.5, workers=1))


def test_ema_weights_are_the_ones_saved_and_checkpointed(prepared, tmp_path):
    from safetensors.torch import load_file

    from imgclf.runfolder import load_checkpoint

    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8, ema=0.9)
    r = train(TrainConfig(data=prepared.root, out=tmp_path / "ema", model="fastcnn-s", recipe=recipe, epochs=2,
                          workers=1))
    ck = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    saved = load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in ck["ema"].items())
    assert any(not torch.equal(ck["model"][k], v) for k, v in ck["ema"].items())  # an average, not a copy
    assert r.status == "done"
