"""ema: the averaged weights are what a run evaluates, saves and checkpoints."""

from dataclasses import replace

import torch

from imgclf.models import get_spec
from imgclf.runfolder import load_checkpoint
from imgclf.train import TrainConfig, train


def test_ema_weights_are_the_ones_saved_and_checkpointed(prepared, tmp_path):
    from safetensors.torch import load_file


    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8, ema=0.9)
    r = train(TrainConfig(data=prepared.root, out=tmp_path / "ema", model="fastcnn-s", recipe=recipe, epochs=2,
                          workers=1))
    ck = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    saved = load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in ck["ema"].items())
    assert any(not torch.equal(ck["model"][k], v) for k, v in ck["ema"].items())  # an average, not a copy
    assert r.status == "done"


def test_ema_pulls_towards_the_weights_with_a_warming_decay():
    import torch.nn as nn

    from imgclf.ema import EMA

    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update(step=1)  # decay min(0.9, 2/11): the first steps follow the weights closely
    d = 2 / 11
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(ema.state_dict()[k], start[k] + (1 - d) * (v - start[k])), k
    assert ema.state_dict()["1.num_batches_tracked"] == 5  # integer counters are copied
    assert not any(p.requires_grad for p in ema.module.parameters())
