"""runfolder: config, history, status, checkpoint and weights I/O; nothing in a run folder is executed."""

import json

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.runfolder import (
    HISTORY_COLUMNS,
    load_checkpoint,
    load_model,
    read_config,
    read_status,
    save_checkpoint,
    save_weights,
    sweep_temp_files,
    write_history,
    write_status,
)


def test_tampered_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ck = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "evil": Payload()}, ck)
    with pytest.raises(ImgclfError, match="refusing to load"):
        load_checkpoint(ck)
    assert not marker.exists()
    ck.write_bytes(ck.read_bytes()[:40])
    with pytest.raises(ImgclfError, match="unreadable or cut short"):
        load_checkpoint(ck)
    with pytest.raises(ImgclfError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none.pt")


def test_weights_round_trip_and_the_files_a_run_holds(tmp_path):
    from imgclf.models import create_model

    model = create_model("fastcnn-s", 3)
    meta = {"model": "fastcnn-s", "input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "classes": ["a", "b", "c"]}
    save_weights(tmp_path, model, meta)
    again, meta2 = load_model(tmp_path)
    assert meta2 == meta and not again.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ImgclfError, match="not a valid safetensors"):
        load_model(tmp_path)
    with pytest.raises(ImgclfError, match="no model.safetensors"):
        load_model(tmp_path / "elsewhere")
    with pytest.raises(ImgclfError, match="not a run folder"):
        read_config(tmp_path)

    history = [{c: i for c in HISTORY_COLUMNS} for i in (1, 2)]
    write_history(tmp_path, history)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    write_status(tmp_path, "done", epoch=2)
    assert read_status(tmp_path) == {"status": "done", "epoch": 2} and read_status(tmp_path / "x")["status"] == "missing"
    save_checkpoint(tmp_path, {"epoch": 2, "history": history})
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    (tmp_path / ".checkpoint.pt.tmp123").write_bytes(b"half")  # what a killed write leaves
    sweep_temp_files(tmp_path)
    assert not list(tmp_path.glob(".*.tmp*")) and json.loads((tmp_path / "status.json").read_text())["epoch"] == 2
