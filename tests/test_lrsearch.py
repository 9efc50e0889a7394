"""lrsearch: the per-recipe learning-rate search looks at the val split only and hands its choice on."""

import csv
import json

from imgclf.compare import CompareConfig, compare
from imgclf.recipes import Recipe
from imgclf.train import TrainConfig

SGD = Recipe("sgd", "sgd", lr=0.05, batch_size=8)


def rows(path):
    return {r["recipe"]: r for r in csv.DictReader(path.open())}


def test_tune_lr_picks_and_uses_the_best_val_lr(prepared, tmp_path):
    compare(CompareConfig(base=TrainConfig(data=prepared.root, out=tmp_path / "c", epochs=1, workers=1), recipes=[SGD], tune_lr=True))
    tune = list(csv.DictReader((tmp_path / "c" / "tune.csv").open()))
    assert len(tune) == 5 and sum(t["chosen"] == "True" for t in tune) == 1
    chosen = next(t for t in tune if t["chosen"] == "True")
    done = [t for t in tune if t["status"] == "done"]
    assert float(chosen["val_acc"]) == max(float(t["val_acc"]) for t in done)
    assert float(rows(tmp_path / "c" / "summary.csv")["sgd"]["lr"]) == float(chosen["lr"])

    used = json.loads((tmp_path / "c" / "runs" / "sgd" / "config.json").read_text())["recipe"]["lr"]
    assert used == float(chosen["lr"])
    assert not (tmp_path / "c" / "tune" / "sgd" / f"lr{float(chosen['lr']):g}" / "metrics.json").exists()  # no test peeking
    assert (tmp_path / "c" / "tune.png").is_file()
