"""Training: run-folder contents, CPU determinism, resume, divergence, safe loading, bf16."""

import csv
import json

import numpy as np
import pytest
import torch

from imgclf.errors import Diverged, ImgclfError
from imgclf.recipes import Recipe
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
    assert set(hist[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "steps"}
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
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert a.metrics == b.metrics
    assert strip(a.history) != strip(c.history)


def test_resume_matches_uninterrupted(prepared, tmp_path):
    full = train(cfg(prepared, tmp_path / "full", epochs=3))
    train(cfg(prepared, tmp_path / "part", epochs=1))
    # Pretend the 1-epoch run was the first third of a 3-epoch run that was killed.
    conf = json.loads((tmp_path / "part" / "config.json").read_text())
    conf["epochs"] = 3
    (tmp_path / "part" / "config.json").write_text(json.dumps(conf))
    resumed = train(config_from_run(tmp_path / "part"), resume=True)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert resumed.metrics == full.metrics


def test_divergence_is_caught_and_last_checkpoint_kept(prepared, tmp_path):
    bad = Recipe("boom", "sgd", lr=1e30, batch_size=1)  # the last bias always gets a gradient: inf, then NaN
    with pytest.raises(Diverged) as e:
        train(cfg(prepared, tmp_path / "run", recipe=bad, epochs=2))
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == e.value.epoch


def test_tampered_checkpoint_is_refused(prepared, tmp_path):
    train(cfg(prepared, tmp_path / "run", epochs=1))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ck = tmp_path / "run" / "checkpoint.pt"
    torch.save({"model": {}, "evil": Payload()}, ck)
    with pytest.raises(ImgclfError, match="refusing to load"):
        load_checkpoint(ck)
    assert not marker.exists()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_malloc_keeps_freed_memory_unless_told_not_to(tmp_path):
    # Process-global, so each setting gets its own interpreter. A freed, touched 64 MiB block stays
    # resident (kept in the heap for the next step) when on; glibc's default munmaps it at once.
    import os
    import subprocess
    import sys

    code = ("import os; from imgclf.device import keep_freed_memory as k; import torch; on = k(); "
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20; "
            "a = torch.ones(64 << 20, dtype=torch.uint8); r1 = rss(); del a; print(on, k(), r1 - rss())")
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                     env={**os.environ, **env}, check=True).stdout.split()
    on, again, released = run({})
    assert on == again == "True" and int(released) < 16  # MiB given back to the kernel on free
    on, again, released = run({"IMGCLF_MALLOC": "system"})
    assert on == again == "False" and int(released) >= 48


def test_bf16_and_fp32_agree_on_a_fixed_batch():
    from imgclf.models import create_model

    torch.manual_seed(0)
    m = create_model("seed-cnn", 2).eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x).float()
    rel = (low - ref).norm() / ref.norm()
    assert rel < 2e-2, rel


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
    draw = balanced_draw(labels, np.bincount(labels))
    idx = draw(torch.Generator().manual_seed(0))
    assert len(idx) == 1000 and 0.45 < (labels[idx.numpy()] == 1).mean() < 0.55  # each class half the time
    assert torch.equal(idx, draw(torch.Generator().manual_seed(0)))  # seeded


@pytest.mark.parametrize("method", ["weights", "sampler"])
def test_balance_methods_train(prepared, tmp_path, method):
    from conftest import train_small_fastcnn

    res = train_small_fastcnn(prepared.root, tmp_path / method, epochs=2, balance=method)
    assert json.loads((tmp_path / method / "config.json").read_text())["balance"] == method
    assert 0 <= res.metrics["balanced_accuracy"] <= 1
    with pytest.raises(ImgclfError, match="--balance"):
        train_small_fastcnn(prepared.root, tmp_path / "x", epochs=1, balance="oversample")
