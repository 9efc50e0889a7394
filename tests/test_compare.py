"""compare: budgets, time to target, LR search, re-splits, parallel jobs."""

import csv
import json
from dataclasses import replace

import pytest
from conftest import without_seconds

from imgclf.compare import CompareConfig, compare, parse_budget
from imgclf.errors import ImgclfError
from imgclf.recipes import Recipe
from imgclf.train import TrainConfig

SGD = Recipe("sgd", "sgd", lr=0.05, batch_size=8)
ADAM = Recipe("adam", "adam", lr=0.002, batch_size=4)


def rows(path):
    return {r["recipe"]: r for r in csv.DictReader(path.open())}


def history(run):
    return list(csv.DictReader((run / "history.csv").open()))


def test_budget_in_steps_gives_every_recipe_the_same_number_of_updates(prepared, tmp_path):
    compare(CompareConfig(base=TrainConfig(data=prepared.root, out=tmp_path / "c", workers=1), recipes=[SGD, ADAM], budget="steps=7"))
    for name in ("sgd", "adam"):
        assert history(tmp_path / "c" / "runs" / name)[-1]["steps"] == "7"
        status = json.loads((tmp_path / "c" / "runs" / name / "status.json").read_text())
        assert status["status"] == "done" and status["stopped_by_budget"]  # 7 steps is part of epoch 2
    # adam (batch 4) needs 2 epochs of a 38-image train split for 7 steps... sgd (batch 8) needs 2 as well
    assert rows(tmp_path / "c" / "summary.csv")["adam"]["steps"] == "7.0"


def test_budget_in_seconds_stops_on_time(prepared, tmp_path):
    compare(CompareConfig(base=TrainConfig(data=prepared.root, out=tmp_path / "c", workers=1), recipes=[SGD], budget="seconds=1.5"))
    h = history(tmp_path / "c" / "runs" / "sgd")
    assert sum(float(r["seconds"]) for r in h) < 30
    assert rows(tmp_path / "c" / "summary.csv")["sgd"]["status"] == "done"


def test_time_to_target_and_never_reached(prepared, tmp_path):
    stuck = Recipe("stuck", "sgd", lr=1e-9, batch_size=8)
    compare(CompareConfig(base=TrainConfig(data=prepared.root, out=tmp_path / "c", epochs=3, workers=1), recipes=[ADAM, stuck], target=0.99))
    s = rows(tmp_path / "c" / "summary.csv")
    assert s["stuck"]["seconds_to_target"] == "not reached in 1 of 1"
    reached = s["adam"]["seconds_to_target"]
    assert reached == "not reached in 1 of 1" or float(reached) > 0


def test_resplit_gives_each_seed_its_own_split(prepared, tmp_path):
    compare(CompareConfig(base=TrainConfig(data=prepared.root, out=tmp_path / "c", epochs=1, workers=1), recipes=[SGD], seeds=2, resplit=True))
    m0 = (tmp_path / "c" / "splits" / "seed0" / "manifest.csv").read_text()
    m1 = (tmp_path / "c" / "splits" / "seed1" / "manifest.csv").read_text()
    assert m0 != m1
    assert rows(tmp_path / "c" / "summary.csv")["sgd"]["seeds"] == "2"


def test_parallel_jobs_give_the_same_results(prepared, tmp_path):
    base = TrainConfig(data=prepared.root, out=tmp_path / "seq", epochs=2, workers=1)
    compare(CompareConfig(base=base, recipes=[SGD, ADAM]))
    compare(CompareConfig(base=replace(base, out=tmp_path / "par"), recipes=[SGD, ADAM], jobs=2))
    for name in ("sgd", "adam"):
        assert without_seconds(history(tmp_path / "seq" / "runs" / name)) == without_seconds(history(tmp_path / "par" / "runs" / name))
        assert (tmp_path / "seq" / "runs" / name / "metrics.json").read_text() == \
            (tmp_path / "par" / "runs" / name / "metrics.json").read_text()
    # Each recipe's CPU seconds are its own process's, beside its wall time, in the summary and the ranking
    summary = rows(tmp_path / "par" / "summary.csv")
    assert all(float(summary[n]["cpu_seconds"]) > 0 for n in ("sgd", "adam"))
    assert "CPU time" in (tmp_path / "par" / "ranking.md").read_text()


@pytest.mark.parametrize("bad", ["weeks=3", "steps=0", "steps=2.5", "seconds=-1", "epochs"])
def test_bad_budget(bad):
    with pytest.raises(ImgclfError, match="--budget"):
        parse_budget(bad)
