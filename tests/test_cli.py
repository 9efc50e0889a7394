"""The CLI end to end on generated images, as a user would type it; errors are one line."""

import csv
import json
import subprocess
import sys

import pytest
from conftest import COLORS, make_folder, make_image

from imgclf.errors import ImgclfError


def imgclf(*args, cwd=None):
    env = {"IMGCLF_QUIET": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "imgclf", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def assert_one_line_error(p, *needles):
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and p.stderr.rstrip().endswith(errors[0]), p.stderr  # exactly one error line, last
    assert all(n in errors[0] for n in needles), errors[0]


def test_cli_whole_workflow(tmp_path):
    src = make_folder(tmp_path / "src", classes=("red", "green", "blue"), n=12)
    (src / "red" / "zero.jpg").write_bytes(b"")
    data, run, cmp_ = tmp_path / "data", tmp_path / "run", tmp_path / "cmp"

    p = imgclf("prepare", src, "--out", data, "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert "rejected: 1" in p.stdout and "train" in p.stdout

    p = imgclf("show", data, "--split", "train", "--out", tmp_path / "batch.png", "--augmented")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "batch.png").stat().st_size > 1000

    p = imgclf("train", data, "--out", run, "--optimizer", "adam", "--epochs", "1", "--batch-size", "8")
    assert p.returncode == 0, p.stderr
    assert "accuracy:" in p.stdout and (run / "model.safetensors").is_file()
    assert "(training " in p.stdout and "the whole command" in p.stdout  # which seconds are which

    p = imgclf("evaluate", run, "--split", "val")
    assert p.returncode == 0, p.stderr
    assert (run / "metrics-val.json").is_file() and "macro avg" in p.stdout

    recipes = tmp_path / "r.yaml"
    recipes.write_text("- name: sgd-fast\n  optimizer: sgd\n  lr: 0.05\n  batch_size: 8\n"
                       "- preset: adam\n  name: adam8\n  batch_size: 8\n")
    p = imgclf("compare", data, "--out", cmp_, "--recipes", recipes, "--epochs", "1")
    assert p.returncode == 0, p.stderr
    summary = list(csv.DictReader((cmp_ / "summary.csv").open()))
    assert {r["recipe"] for r in summary} == {"sgd-fast", "adam8"}
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in summary)
    assert (cmp_ / "accuracy.png").is_file() and (cmp_ / "loss.png").is_file()

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = make_image(tmp_path / "new" / "x.png", COLORS["green"], fmt="PNG")
    p = imgclf("predict", run, good, bad, tmp_path / "missing.jpg", "--format", "json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert [bool(r["error"]) for r in res] == [False, True, True]
    assert res[0]["class"] in ("red", "green", "blue") and 0 <= res[0]["prob"] <= 1
    p = imgclf("predict", run, tmp_path / "new", "--format", "csv", "--top-k", "2")
    assert p.returncode == 0 and p.stdout.splitlines()[0] == "path,class,prob,top_k,error"
    assert len(p.stdout.splitlines()[1].split(",")[3].split()) == 2  # the two most likely classes
    p = imgclf("predict", run, bad)
    assert p.returncode == 1 and "1 of 1 files could not be read" in p.stderr  # nothing read: a failure


def test_cli_errors_are_one_line(tmp_path, capsys):
    from types import SimpleNamespace

    from imgclf.cli import main

    def run(*args):  # in this process (the same main() as above, without 2-3 s of imports a call)
        code = main(list(map(str, args)))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    assert_one_line_error(run("prepare", tmp_path / "nope", "--out", tmp_path / "d"), "does not exist")
    src = make_folder(tmp_path / "src", classes=("red",), n=3)
    assert_one_line_error(run("prepare", src, "--out", tmp_path / "d"), "at least 2 classes")
    assert_one_line_error(run("train", tmp_path / "src", "--out", tmp_path / "r"), "at least 2 classes")
    assert_one_line_error(run("evaluate", tmp_path), "not a run folder")
    src = make_folder(tmp_path / "src2", n=4)
    assert run("prepare", src, "--out", tmp_path / "d2").returncode == 0
    assert_one_line_error(run("prepare", src, "--out", tmp_path / "d2"), "--force")
    assert_one_line_error(run("prepare", src, "--out", tmp_path / "d3", "--test", "1.5"), "--test")
    assert_one_line_error(run("train", tmp_path / "d2", "--out", tmp_path / "r", "--optimizer", "lion"), "--optimizer")
    assert_one_line_error(run("train", tmp_path / "d2", "--out", tmp_path / "r", "--model", "fastcnn-s",
                              "--size", "100"), "--size 100")
    # As typed: the same errors from a fresh process, and typer's usage error (a missing --out), not a traceback
    assert_one_line_error(imgclf("train", tmp_path / "d2", "--out", tmp_path / "r", "--optimizer", "lion"), "--optimizer")
    p = imgclf("prepare", src)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_cli_compare_marks_divergence_and_others_carry_on(tmp_path):
    src = make_folder(tmp_path / "src", n=10)
    assert imgclf("prepare", src, "--out", tmp_path / "d").returncode == 0
    recipes = tmp_path / "r.yaml"
    recipes.write_text("- name: blowup\n  optimizer: sgd\n  lr: 1.0e+30\n  batch_size: 1\n"
                       "- name: fine\n  optimizer: adam\n  lr: 0.001\n  batch_size: 8\n")
    p = imgclf("compare", tmp_path / "d", "--out", tmp_path / "c", "--recipes", recipes, "--epochs", "1")
    assert p.returncode == 0, p.stderr
    rows = {r["recipe"]: r for r in csv.DictReader((tmp_path / "c" / "summary.csv").open())}
    assert rows["blowup"]["status"] == "diverged" and rows["blowup"]["diverged_epoch"] == "1"
    assert rows["fine"]["status"] == "done" and rows["fine"]["rank"] == "1"
    assert "diverged" in p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("budget", [None, "5"])
def test_demo_shows_the_tutorial_and_the_default_classifier(tmp_path, budget):
    """The demo as `make demo` runs it: both stories, flips off, the default classifier >= 97%; also
    on a machine too slow for its budget (5 s here), where it trains the plan's cheapest rung untimed."""
    p = imgclf("demo", "--out", tmp_path / "demo", "--epochs", "1", *(["--budget", budget] if budget else []))
    assert p.returncode == 0, p.stderr
    said = " ".join(p.stdout.split())  # as read, whatever the terminal's line breaks
    assert "ranking" in said and "1 epoch is far too few" in said  # the tutorial's numbers are labelled as such
    for r in ("vanilla-sgd", "minibatch-sgd", "momentum", "adam"):
        assert r in p.stdout
    assert (tmp_path / "demo" / "compare" / "summary.csv").is_file()
    default = json.loads((tmp_path / "demo" / "default" / "metrics.json").read_text())
    assert default["accuracy"] >= 0.97, default["accuracy"]  # 99.4% here in 25 s of training
    assert f"{default['accuracy']:.1%} test accuracy" in said
    conf = json.loads((tmp_path / "demo" / "default" / "config.json").read_text())
    assert conf["recipe"]["hflip"] is False and conf["model_meta"]["tta"] is False  # a mirrored 7 is no 7
    assert (tmp_path / "demo" / "default" / "report.html").is_file()
    if budget:  # at the batch the plan gives 1,131 training images (64), not the recipe's 128: 96.8% there
        assert "training the plan's cheapest choice instead" in said and conf["recipe"]["batch_size"] == 64


def test_version_and_square_brackets_in_help_and_errors(tmp_path, monkeypatch, capsys):
    from imgclf import __version__, serve
    from imgclf.cli import main

    p = imgclf("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"imgclf {__version__}"
    p = subprocess.run([sys.executable, "-m", "imgclf", "train", "--help"], capture_output=True, text=True,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert "imgclf[pretrained]" in p.stdout  # rich markup would eat "[pretrained]"
    monkeypatch.setattr(serve, "model_kind", lambda m: (_ for _ in ()).throw(ImgclfError("pip install 'imgclf[serve]'")))
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'imgclf[serve]'" in capsys.readouterr().err
