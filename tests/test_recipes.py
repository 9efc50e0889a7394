"""recipes: the tutorial's presets, recipes by name (torch.optim too), YAML files."""

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.optim import build_optimizer, param_groups
from imgclf.recipes import PRESETS, TUTORIAL_PRESETS, Recipe, load_recipes


def test_presets_match_the_tutorial():
    assert list(TUTORIAL_PRESETS) == ["vanilla-sgd", "minibatch-sgd", "momentum", "adam"]
    assert PRESETS["vanilla-sgd"].batch_size == 1 and PRESETS["momentum"].momentum == 0.9
    p = torch.nn.Parameter(torch.zeros(3))
    assert isinstance(build_optimizer(PRESETS["adam"], [p]), torch.optim.Adam)
    opt = build_optimizer(PRESETS["momentum"], [p])
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_recipes_yaml(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(
        "- name: adamw-wd\n  optimizer: AdamW\n  lr: 0.002\n  weight_decay: 0.05\n  batch_size: 16\n"
        "- name: rms\n  optimizer: rmsprop\n  lr: 0.0005\n  momentum: 0.5\n"
        "- preset: adam\n  name: adam-slow\n  lr: 0.0001\n"
    )
    rs = load_recipes(f)
    assert [r.name for r in rs] == ["adamw-wd", "rms", "adam-slow"]
    assert rs[2].betas == (0.9, 0.999) and rs[2].lr == 0.0001
    p = torch.nn.Parameter(torch.zeros(3))
    assert isinstance(build_optimizer(rs[0], [p]), torch.optim.AdamW)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("- name: x\n  optimizer: nope\n  lr: 0.1\n", "unknown optimizer"),
        ("- name: x\n  optimizer: sgd\n  lr: -1\n", "lr must be"),
        ("- name: x\n  optimizer: sgd\n  lr: 0.1\n  colour: red\n", "unknown keys"),
        ("- name: x\n  optimizer: adam\n  lr: 0.1\n  momentum: 0.9\n", "takes no momentum"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_recipes_yaml_errors(tmp_path, text, msg):
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(ImgclfError, match=msg):
        rs = load_recipes(f)
        build_optimizer(rs[0], [torch.nn.Parameter(torch.zeros(1))])


def test_recipe_validation():
    with pytest.raises(ImgclfError, match="batch_size"):
        Recipe("x", "sgd", lr=0.1, batch_size=0).validate()


def test_optimizer_names_from_torch_optim_get_sensible_recipes():
    from imgclf.recipes import get_recipe

    sgd, adamw, nadam = get_recipe("SGD"), get_recipe("adamw"), get_recipe("nadam")
    assert (sgd.optimizer, sgd.lr, sgd.momentum, sgd.batch_size) == ("sgd", 0.01, 0.9, 32)
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 0.01) and nadam.lr == 2e-3  # NAdam's own default
    assert get_recipe("rmsprop").lr == 1e-3
    model = torch.nn.Linear(3, 2)
    for r in (sgd, adamw, nadam, get_recipe("adagrad")):
        build_optimizer(r, param_groups(r, model))
    with pytest.raises(ImgclfError, match="closure"):
        get_recipe("lbfgs")
    with pytest.raises(ImgclfError, match="neither a recipe"):
        get_recipe("lion")
