"""Training: run-folder contents, CPU determinism, resume, divergence, safe loading, bf16."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import without_seconds

from imgclf.errors import Diverged, ImgclfError
from imgclf.models import get_spec
from imgclf.optim import Recipe
from imgclf.runfolder import load_checkpoint, load_model
from imgclf.train import TrainConfig, config_from_run, train


def cfg(prepared, out, **kw):
    kw.setdefault("recipe", Recipe("adam", "adam", lr=0.002, batch_size=8))
    kw.setdefault("epochs", 2)
    kw.setdefault("model", "seed-cnn")
    return TrainConfig(data=prepared.root, out=out, workers=1, **kw)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_a_complete_run_folder(prepared, tmp_path):
    r = train(cfg(prepared, tmp_path / "run"))
    run = tmp_path / "run"
    for f in ["config.json", "history.csv", "model.safetensors", "model.json", "metrics.json", "loss.png",
              "accuracy.png", "confusion.png", "predictions.csv", "checkpoint.pt"]:
        assert (run / f).is_file(), f
    conf = json.loads((run / "config.json").read_text())
    assert conf["seed"] == 0 and conf["environment"]["torch"] == torch.__version__
    assert "malloc_keeps_freed_memory" in conf["environment"]  # recorded with the rest of the machine
    assert conf["recipe"]["optimizer"] == "adam" and conf["model_meta"]["input_size"] == 224
    hist = rows(run / "history.csv")
    assert [h["epoch"] for h in hist] == ["1", "2"]
    assert set(hist[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "steps",
                            "cpu_seconds"}
    assert (run / "report.html").is_file()
    m = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy"] == r.metrics["accuracy"]
    # Recount every metric from the saved predictions.
    preds = rows(run / "predictions.csv")
    assert len(preds) == m["n"]
    assert m["accuracy"] == pytest.approx(np.mean([p["true"] == p["pred"] for p in preds]))
    model, meta = load_model(run)
    assert meta["classes"] == ["blue", "red"] and isinstance(model, torch.nn.Module)


def test_same_seed_same_numbers_on_cpu(prepared, tmp_path):
    a = train(cfg(prepared, tmp_path / "a", seed=5))
    b = train(cfg(prepared, tmp_path / "b", seed=5))
    c = train(cfg(prepared, tmp_path / "c", seed=6))
    assert without_seconds(a.history) == without_seconds(b.history)
    assert a.metrics == b.metrics
    assert without_seconds(a.history) != without_seconds(c.history)


def test_resume_matches_uninterrupted(prepared, tmp_path):
    full = train(cfg(prepared, tmp_path / "full", epochs=3))
    train(cfg(prepared, tmp_path / "part", epochs=1))
    # Pretend the 1-epoch run was the first third of a 3-epoch run that was killed.
    conf = json.loads((tmp_path / "part" / "config.json").read_text())
    conf["epochs"] = 3
    (tmp_path / "part" / "config.json").write_text(json.dumps(conf))
    resumed = train(config_from_run(tmp_path / "part"), resume=True)
    assert without_seconds(resumed.history) == without_seconds(full.history)
    assert resumed.metrics == full.metrics


def test_divergence_is_caught_and_last_checkpoint_kept(prepared, tmp_path):
    bad = Recipe("boom", "sgd", lr=1e30, batch_size=1)  # the last bias always gets a gradient: inf, then NaN
    with pytest.raises(Diverged) as e:
        train(cfg(prepared, tmp_path / "run", recipe=bad, epochs=2))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == e.value.epoch and status["step"] == e.value.step
    assert "loss became" in status["message"]
    # what the run had before the bad step stays: no weights pretending to be a result, and a
    # checkpoint (if an epoch finished) that loads with the epochs history.csv lists
    assert not (tmp_path / "run" / "model.safetensors").exists()
    done = rows(tmp_path / "run" / "history.csv") if (tmp_path / "run" / "history.csv").exists() else []
    assert len(done) == e.value.epoch - 1
    if done:
        assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == len(done)


def test_bad_options_are_clear(prepared, tmp_path):
    with pytest.raises(ImgclfError, match="--epochs"):
        train(cfg(prepared, tmp_path / "r", epochs=0))
    with pytest.raises(ImgclfError, match="--model"):
        train(cfg(prepared, tmp_path / "r", model="nope"))
    with pytest.raises(ImgclfError, match="--device"):
        train(cfg(prepared, tmp_path / "r", device="tpu"))


def test_no_hflip_turns_off_training_flips_and_the_mirror_view(prepared, tmp_path):
    from conftest import train_small_fastcnn

    from imgclf.classifier import Classifier

    train_small_fastcnn(prepared.root, tmp_path / "run", epochs=1, hflip=False)
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["recipe"]["hflip"] is False and conf["recipe"]["tta"] is True  # the recipe asks; the data says no
    assert conf["model_meta"]["tta"] is False and not Classifier(tmp_path / "run").mirror
    from imgclf.recipes import load_recipes

    (tmp_path / "r.yaml").write_text("- preset: adam\n  name: adam-noflip\n  hflip: false\n  tta: true\n")
    (r,) = load_recipes(tmp_path / "r.yaml")
    assert r.hflip is False and not r.test_mirror


def test_keep_best_patience_and_tensorboard(prepared, tmp_path):
    """--keep best saves the best validation epoch's weights; --patience stops a run that stopped
    improving; --tensorboard writes event files; balanced accuracy is in metrics.json."""
    from conftest import train_small_fastcnn

    from imgclf.runfolder import load_checkpoint

    res = train_small_fastcnn(prepared.root, tmp_path / "best", epochs=4, keep="best", tensorboard=True)
    status = json.loads((tmp_path / "best" / "status.json").read_text())
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    best_epoch = max(res.history, key=lambda h: h["val_acc"])["epoch"]  # the first of the best
    assert status["best_epoch"] == meta["epoch_kept"] == best_epoch
    ckpt = load_checkpoint(tmp_path / "best" / "checkpoint.pt")
    assert ckpt["best"]["epoch"] == best_epoch and ckpt["best"]["state"] is not None
    assert list((tmp_path / "best" / "tensorboard").glob("events.out.tfevents.*"))
    m = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert m["balanced_accuracy"] == pytest.approx(np.mean([c["recall"] for c in m["per_class"].values()]))

    # patience 1 on a task learnt in the first epochs: val accuracy stops rising, the run stops early
    res = train_small_fastcnn(prepared.root, tmp_path / "pat", epochs=12, patience=1)
    status = json.loads((tmp_path / "pat" / "status.json").read_text())
    assert status["stopped_by"] == "patience" and len(res.history) < 12
    accs = [h["val_acc"] for h in res.history]
    assert accs[-1] <= max(accs[:-1])  # the last epoch brought no improvement


def test_class_weights_and_balanced_draw():
    from imgclf.train import balanced_draw, class_weights

    w = class_weights(np.array([900, 100, 0]))
    assert w.tolist() == pytest.approx([1000 / 1800, 1000 / 200, 0.0])  # mean 1 over the present classes
    labels = np.array([0] * 900 + [1] * 100)
    draw = balanced_draw(labels, np.bincount(labels), len(labels))
    idx = draw(torch.Generator().manual_seed(0))
    assert len(idx) == 1000 and 0.45 < (labels[idx.numpy()] == 1).mean() < 0.55  # each class half the time
    assert torch.equal(idx, draw(torch.Generator().manual_seed(0)))  # seeded


def test_epoch_subsets_are_new_each_epoch_and_train_fewer_steps(prepared, tmp_path):
    from conftest import train_small_fastcnn
    from imgclf.train import subset_draw

    draw, gen = subset_draw(100, 30), torch.Generator().manual_seed(0)
    a, b = draw(gen), draw(gen)
    assert len(a) == len(set(a.tolist())) == 30 and not torch.equal(a, b)  # no repeats within, new each epoch
    n_train = len(prepared.split_rows("train"))
    res = train_small_fastcnn(prepared.root, tmp_path / "sub", epochs=2, epoch_images=n_train // 2)
    steps = torch.load(tmp_path / "sub" / "checkpoint.pt", weights_only=True)["scheduler"]["last_epoch"]
    assert res.status == "done" and len(res.history) == 2
    assert steps == 2 * ((n_train // 2) // 8)  # two epochs of half the images, batch 8, the last partial one dropped


@pytest.mark.parametrize("method", ["weights", "sampler"])
def test_balance_methods_train(prepared, tmp_path, method):
    from conftest import train_small_fastcnn

    res = train_small_fastcnn(prepared.root, tmp_path / method, epochs=2, balance=method)
    assert json.loads((tmp_path / method / "config.json").read_text())["balance"] == method
    assert 0 <= res.metrics["balanced_accuracy"] <= 1
    with pytest.raises(ImgclfError, match="--balance"):
        train_small_fastcnn(prepared.root, tmp_path / "x", epochs=1, balance="oversample")


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


def test_progressive_training_feeds_the_scheduled_sizes(prepared, tmp_path, monkeypatch):
    import imgclf.train as train_mod

    seen = []  # the side of the cached images each epoch trains on

    def spy(loop, split, *args, **kwargs):
        seen.append(split.images.shape[1])
        return real(loop, split, *args, **kwargs)

    real = train_mod.train_epoch
    monkeypatch.setattr(train_mod, "train_epoch", spy)
    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8, progressive=0.5)
    train(TrainConfig(data=prepared.root, out=tmp_path / "p", model="fastcnn-s", recipe=recipe, epochs=4,
                      workers=1, size=96))
    assert seen == [48, 48, 48, 80]  # 48 px for half the epochs, then ramping to 96, each from its own cache
    assert json.loads((tmp_path / "p" / "config.json").read_text())["model_meta"]["input_size"] == 108
