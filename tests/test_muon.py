"""Muon for conv filters (muon.py): the orthogonalisation, the SGD half, and how recipes route parameters."""

import pytest
import torch
from conftest import ctrl_c_in_epoch, without_seconds

from imgclf.errors import ImgclfError
from imgclf.models import create_model
from imgclf.muon import MuonSGD, orthogonalize
from imgclf.optim import Recipe, build_optimizer, param_groups


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (32, 3, 3, 3), (16, 300), (300, 16)])
def test_orthogonalize_flattens_singular_values(shape):
    torch.manual_seed(0)
    m = shape[0]
    n = int(torch.tensor(shape[1:]).prod())
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k))
    v, _ = torch.linalg.qr(torch.randn(n, k))
    g = ((u * torch.logspace(0, -1, k)) @ v.T).reshape(shape)  # singular values 1 down to 0.1
    o = orthogonalize(g)
    assert o.shape == g.shape and o.dtype == g.dtype
    s = torch.linalg.svdvals(o.reshape(m, -1).float())
    # three quintic steps leave them near 1, not at 1 (Muon's trade): a 10x spread becomes < 2x
    assert 0.6 < s.min() and s.max() < 1.25, s


def test_sgd_groups_step_exactly_like_torch_sgd():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(4))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = MuonSGD([{"params": a[:1]}, {"params": a[1:], "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                   nesterov=True, weight_decay=5e-3)
    ref = torch.optim.SGD([{"params": b[:1]}, {"params": b[1:], "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=5e-3)
    for step in range(4):
        for ps in (a, b):
            for i, p in enumerate(ps):
                p.grad = torch.full_like(p, float(step + i)) + torch.arange(p.numel()).view_as(p) * 0.01
        ours.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_muon_group_steps_at_a_fixed_norm_by_an_orthogonal_matrix():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 8, 3, 3) * 5)  # far from the norm Muon keeps
    opt = MuonSGD([{"params": [w], "muon": True, "lr": 0.01}], lr=0.1, momentum=0.9, weight_decay=0.1)
    w.grad = torch.randn_like(w)
    before = w.detach().clone()
    opt.step()
    normalized = before * 16 ** 0.5 / before.norm()
    step = (normalized - w.detach()).reshape(16, -1)
    s = torch.linalg.svdvals(step)
    assert s.max() < 0.013 and s.min() > 0.003  # lr 0.01 (the group's, not the default) x ~1 singular values
    assert abs(w.norm().item() - 4.0) < 0.05  # sqrt(16 output channels), decay ignored


@pytest.mark.parametrize("fast_bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_newton_schulz_runs_in_bf16_only_where_the_cpu_has_it(monkeypatch, fast_bf16, dtype):
    # Emulated bf16 matmuls made Muon's step 25x slower on an AVX2-only CPU: there it runs in fp32
    import imgclf.muon as muon

    monkeypatch.setattr("imgclf.device.cpu_has_fast_bf16", lambda: fast_bf16)
    assert muon.ns_dtype(torch.device("cpu")) == dtype
    seen = []
    monkeypatch.setattr(muon, "orthogonalize", lambda g, steps, dt: seen.append(dt) or muon.torch.zeros_like(g))
    w = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    w.grad = torch.randn_like(w)
    MuonSGD([{"params": [w], "muon": True}], lr=0.01).step()
    assert seen == [dtype]


def test_recipe_routes_conv_filters_to_muon():
    m = create_model("fastcnn-s", 2)
    r = Recipe("x", "sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, decay_norm_bias=False,
               muon=0.04).validate()
    groups = param_groups(r, m)
    assert [g.get("muon", False) for g in groups] == [False, False, True]
    assert all(p.ndim == 4 for p in groups[2]["params"]) and groups[2]["lr"] == 0.04
    assert [p.ndim for p in groups[0]["params"]] == [2]  # the head keeps SGD with decay
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    opt = build_optimizer(r, groups)
    assert isinstance(opt, MuonSGD) and opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 5e-4
    # a head alone (linear probe) has no filters: no Muon group
    assert len(param_groups(r, torch.nn.Linear(4, 2))) == 2


@pytest.mark.parametrize("bad, msg", [(dict(muon=2.0), "muon must be"), (dict(muon=0.05, optimizer="adam"), "goes with")])
def test_muon_recipe_errors(bad, msg):
    with pytest.raises(ImgclfError, match=msg):
        Recipe("x", **{"optimizer": "sgd", "lr": 0.1, **bad}).validate()


def test_training_with_muon_is_deterministic_and_resumes_exactly(prepared, tmp_path, monkeypatch):
    from dataclasses import replace

    from imgclf.errors import Interrupted
    from imgclf.models import get_spec
    from imgclf.train import TrainConfig, config_from_run, train

    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8)  # the bundled recipe: Muon on
    assert recipe.muon

    def run(out):
        return train(TrainConfig(data=prepared.root, out=tmp_path / out, model="fastcnn-s", recipe=recipe,
                                 epochs=3, seed=1, workers=1))

    full, again = run("full"), run("again")
    assert without_seconds(full.history) == without_seconds(again.history) and full.metrics == again.metrics
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"]

    ctrl_c_in_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        run("part")
    monkeypatch.undo()
    resumed = train(config_from_run(tmp_path / "part"), resume=True)  # Muon's momentum from the checkpoint
    assert without_seconds(resumed.history) == without_seconds(full.history) and resumed.metrics == full.metrics
