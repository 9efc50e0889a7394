"""Faults: SIGKILL at random moments (also inside a checkpoint write), Ctrl-C, tampered
checkpoints and a full disk. Each must leave a state that resumes to the very same result."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import make_folder, without_seconds

TRAIN_ARGS = ["--optimizer", "momentum", "--batch-size", "2", "--epochs", "6", "--seed", "3"]
ENV = {**os.environ, "IMGCLF_QUIET": "1"}


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "imgclf", *map(str, args)]


def outcome(run: Path) -> tuple[list[dict], dict]:
    hist = [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")}
            for r in csv.DictReader((run / "history.csv").open())]
    return hist, json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    src = make_folder(tmp / "src", classes=("red", "green", "blue"), n=24)
    subprocess.run(cli("prepare", src, "--out", tmp / "data", "--cache", "224"), check=True, env=ENV,
                   capture_output=True)
    return tmp / "data"


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    t = time.perf_counter()
    subprocess.run(cli("train", dataset, "--out", run, *TRAIN_ARGS), check=True, env=ENV, capture_output=True)
    return outcome(run), time.perf_counter() - t


def test_sigkill_at_random_moments_then_resume_matches(dataset, reference, tmp_path):
    (ref_outcome, ref_seconds) = reference
    rng = random.Random(1234)
    run = tmp_path / "run"
    kills = mid_run_kills = 0
    for _ in range(30):
        if (run / "config.json").is_file():
            cmd = cli("train", "--resume", run)
        else:  # killed before anything resumable was written: start again
            cmd = cli("train", dataset, "--out", run, *TRAIN_ARGS, "--force")
        p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 5:
            # The reference run paid the cold start (imports from a cold disk), so later runs can
            # be much quicker: aim the kills well inside it.
            time.sleep(rng.uniform(0.3, 0.6 * ref_seconds))
            if p.poll() is None:
                mid_run_kills += (run / "checkpoint.pt").is_file()
                p.send_signal(signal.SIGKILL)
                kills += 1
        p.wait(timeout=300)
        if p.returncode == 0 and kills < 3:  # finished before enough kills landed: start over
            shutil.rmtree(run)
            kills = mid_run_kills = 0
            continue
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()
    assert p.returncode == 0, p.stderr.read().decode()
    assert kills >= 3, f"only {kills} kills landed; the run is too short"
    assert outcome(run) == ref_outcome
    assert not list(run.glob(".*.tmp*"))
    print(f"{kills} kills, {mid_run_kills} of them after a checkpoint existed")


KILL_IN_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    import imgclf.files as files
    real_replace = os.replace
    count = {"n": 0}
    def replace(a, b):
        if str(b).endswith("checkpoint.pt"):
            count["n"] += 1
            if count["n"] == 2:  # the temp file is written and synced, the rename never happens
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(a, b)
    files.os.replace = replace
    from imgclf.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_inside_checkpoint_write_then_resume_matches(dataset, reference, tmp_path):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", KILL_IN_CHECKPOINT, "train", dataset, "--out", run, *TRAIN_ARGS],
                       env=ENV, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    assert list(run.glob(".checkpoint.pt.*.tmp"))  # the half-done write is there...
    p = subprocess.run(cli("train", "--resume", run), env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert outcome(run) == reference[0]  # ...and the resumed run is exactly the uninterrupted one
    assert not list(run.glob(".*.tmp*"))


def test_ctrl_c_stops_cleanly_and_resumes(dataset, reference, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(cli("train", dataset, "--out", run, *TRAIN_ARGS), env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoint.pt").is_file():
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    if p.returncode == 0:
        pytest.skip("training finished before Ctrl-C arrived")
    assert p.returncode == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert subprocess.run(cli("train", "--resume", run), env=ENV, capture_output=True).returncode == 0
    assert outcome(run) == reference[0]


def test_tampered_checkpoint_refused_by_cli(dataset, tmp_path):
    run = tmp_path / "run"
    subprocess.run(cli("train", dataset, "--out", run, "--epochs", "1", "--batch-size", "8"), check=True, env=ENV,
                   capture_output=True)
    marker = tmp_path / "pwned"
    payload = f"""
import torch
class P:
    def __reduce__(self):
        return (open, ({str(marker)!r}, "w"))
torch.save({{"model": {{}}, "x": P()}}, {str(run / 'checkpoint.pt')!r})
"""
    subprocess.run([sys.executable, "-c", payload], check=True)
    p = subprocess.run(cli("train", "--resume", run), env=ENV, capture_output=True, text=True)
    assert p.returncode == 2 and "refusing to load" in p.stderr and "Traceback" not in p.stderr
    assert not marker.exists()


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from imgclf.errors import ImgclfError
    try:
        if sys.argv[1] == "checkpoint":
            import torch
            from imgclf.runfolder import save_checkpoint
            save_checkpoint(__import__("pathlib").Path(sys.argv[3]), {"big": torch.zeros(4_000_000)})
        else:
            from imgclf.cache import open_cache
            from imgclf.manifest import load_dataset
            open_cache(load_dataset(sys.argv[3]), 96, workers=1)
    except ImgclfError as e:
        print("ERROR", e)
        sys.exit(3)
""")


def test_disk_full_during_checkpoint_keeps_previous(dataset, tmp_path):
    import torch

    from imgclf.runfolder import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, {"epoch": 1, "w": torch.arange(10)})
    p = subprocess.run([sys.executable, "-c", DISK_FULL, "checkpoint", str(1 << 20), str(run)], env=ENV,
                       capture_output=True, text=True)
    assert p.returncode == 3 and "disk full" in p.stdout and "previous version" in p.stdout, p.stdout + p.stderr
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp*"))


def test_disk_full_during_cache_build_keeps_previous(dataset):
    before = sorted(p.name for p in (dataset / "cache").iterdir())
    p = subprocess.run([sys.executable, "-c", DISK_FULL, "cache", str(1 << 20), str(dataset)], env=ENV,
                       capture_output=True, text=True)
    assert p.returncode == 3 and "disk full" in p.stdout and "intact" in p.stdout, p.stdout + p.stderr
    assert sorted(p.name for p in (dataset / "cache").iterdir()) == before  # no half cache left, old one kept


def test_compare_resume_skips_finished_recipes(dataset, tmp_path):
    cmp_ = tmp_path / "cmp"
    recipes = tmp_path / "r.yaml"
    recipes.write_text("- name: a\n  optimizer: sgd\n  lr: 0.05\n  batch_size: 8\n"
                       "- name: b\n  optimizer: adam\n  lr: 0.001\n  batch_size: 8\n")
    args = ["compare", dataset, "--out", cmp_, "--recipes", recipes, "--epochs", "2"]
    assert subprocess.run(cli(*args), env=ENV, capture_output=True).returncode == 0
    first = (cmp_ / "summary.csv").read_text()
    b = cmp_ / "runs" / "b"
    done_a = (cmp_ / "runs" / "a" / "metrics.json").stat().st_mtime_ns
    for f in ("metrics.json", "status.json", "model.safetensors"):  # as if killed before b finished
        (b / f).unlink()
    p = subprocess.run(cli(*args, "--resume"), env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "a: already done, skipped" in p.stderr
    assert (cmp_ / "runs" / "a" / "metrics.json").stat().st_mtime_ns == done_a
    table = lambda t: list(csv.DictReader(t.splitlines()))  # noqa: E731
    assert without_seconds(table((cmp_ / "summary.csv").read_text())) == without_seconds(table(first))
