"""plan: the budget planner picks a rung it measured, records why, and refuses a budget too short."""

import json

import pytest

from imgclf.errors import ImgclfError
from imgclf.train import TrainConfig, train


def test_budget_plan_picks_a_rung_and_records_it(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    # Two cheap rungs, at most 3 epochs: this checks the mechanism; BENCHMARKS.md holds the real ladder's figures.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-m", 96, 10_000), ("fastcnn-s", 160, 10_000), ("fastcnn-s-p3", 96, 1)])
    monkeypatch.setattr(plan, "MAX_EPOCHS", 3)
    probed = []
    real_measure = plan.measure_rate
    monkeypatch.setattr(plan, "measure_rate", lambda name, size, *a, **k: probed.append((name, size))
                        or real_measure(name, size, *a, **k))
    r = train(plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "auto", max_seconds=60, workers=1)))
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
        plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=0.5, workers=1))
    with pytest.raises(ImgclfError, match="planned first"):  # train() runs concrete configs only
        train(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=60, workers=1))


def test_a_budget_short_of_every_minimum_trains_the_cheapest_rung(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    # No rung affords its minimum epochs (a big folder's case): the cheapest trains what fits.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-s", 96, 10_000), ("fastcnn-s-p3", 96, 10_000)])
    monkeypatch.setattr(plan, "MAX_EPOCHS", 2)
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "r", max_seconds=60, workers=1))
    assert (cfg.model, cfg.size, cfg.epochs) == ("fastcnn-s-p3", 96, 2)
    assert cfg.plan["measured"][-1]["epochs_fit"] < 10_000
    # Short of one epoch: refused, naming the budget that would do
    with pytest.raises(ImgclfError, match=r"too short .* give it --budget seconds=\d+ or more"):
        plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "s", max_seconds=0.5, workers=1))
