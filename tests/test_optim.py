"""optim: the Recipe type, its validation, optimizers, schedules, test-time sizes."""

from dataclasses import replace

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.models import create_model, get_spec
from imgclf.optim import Recipe, build_optimizer, eval_sizes, param_groups
from imgclf.recipes import recipe_from_dict


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


def test_schedules_are_a_registry_and_an_unknown_name_is_an_error():
    from imgclf.optim import SCHEDULES, build_scheduler

    model = torch.nn.Linear(2, 2)
    lrs = {}
    for name in SCHEDULES:
        r = Recipe("x", "sgd", lr=1.0, schedule=name, warmup=0.25)
        opt = build_optimizer(r, param_groups(r, model))
        sched = build_scheduler(opt, r, total_steps=8)
        lrs[name] = []
        for _ in range(8):
            lrs[name].append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert lrs["constant"] == [1.0] * 8
    assert lrs["cosine"][0] == 1.0 and lrs["cosine"] == sorted(lrs["cosine"], reverse=True)
    assert lrs["onecycle"][:3] == [0.5, 1.0, 1.0] and lrs["onecycle"][-1] == pytest.approx(1 / 6)  # warm 2 of 8 steps
    with pytest.raises(ImgclfError, match="schedule must be one of constant, cosine, onecycle"):
        Recipe("x", "sgd", lr=0.1, schedule="linear").validate()
    with pytest.raises(ImgclfError, match="schedule must be one of"):
        build_scheduler(opt, Recipe("x", "sgd", lr=0.1, schedule="linear"), 8)


def test_a_one_step_run_gets_a_schedule():  # a folder smaller than one batch, one epoch
    from imgclf.optim import SCHEDULES

    for name, f in SCHEDULES.items():
        lr = f(1, 0.2)
        assert [lr(0), lr(1)] == [1.0, 0.0 if name != "constant" else 1.0], name
