"""Fixtures: small image folders generated on the fly, and the optional real data in ../shared."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("IMGCLF_QUIET", "1")  # no progress bars in test logs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COLORS = {"red": (200, 40, 40), "green": (40, 180, 40), "blue": (40, 40, 200)}


def make_image(path: Path, color, size=(40, 32), seed=0, fmt=None) -> Path:
    """A noisy flat-colour image: classes differ by colour, so tiny CNNs learn them in an epoch."""
    rng = np.random.default_rng(seed)
    a = (rng.normal(0, 25, (size[1], size[0], 3)) + np.array(color)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)
    return path


def make_folder(root: Path, classes=("red", "blue"), n=30, ext=".jpg") -> Path:
    for c in classes:
        for i in range(n):
            # crc32, not hash(): str hashes change from process to process (PYTHONHASHSEED), and so did the images
            make_image(root / c / f"{c}_{i}{ext}", COLORS[c], seed=zlib.crc32(f"{c}_{i}".encode()))
    return root


def without_seconds(history: list[dict]) -> list[dict]:
    """History (or summary) rows without their wall and CPU times, which vary from run to run."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "cpu_seconds")} for row in history]


def ctrl_c_in_epoch(monkeypatch, n: int) -> None:
    """As if Ctrl-C came during train()'s n-th epoch (undo with monkeypatch.undo())."""
    import imgclf.train as train_mod

    real, calls = train_mod.train_epoch, []

    def epoch(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_epoch", epoch)


def copy_pets(shared: Path, dst: Path, per_class: int) -> Path:
    """The first `per_class` real PetImages of each class, copied into class folders."""
    import shutil

    for c in ("Cat", "Dog"):
        (dst / c).mkdir(parents=True)
        for f in sorted((shared / "petimages" / c).iterdir())[:per_class]:
            shutil.copy(f, dst / c / f.name)
    return dst


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "src")


@pytest.fixture
def prepared(tmp_path, image_folder):
    from imgclf.prepare import PrepareConfig, prepare

    return prepare(PrepareConfig(src=image_folder, out=tmp_path / "data", workers=1))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "petimages").is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED


def train_small_fastcnn(data: Path, out: Path, epochs: int = 3, **kw):
    """fastcnn-s on a generated folder at 64 px: every test-time view of the bundled recipe (three
    decoded sizes, each mirrored) in a run that trains in seconds."""
    from dataclasses import replace

    from imgclf.models import get_spec
    from imgclf.train import TrainConfig, train

    recipe = replace(get_spec("fastcnn-s").recipe, batch_size=8)
    return train(TrainConfig(data=data, out=out, model="fastcnn-s", recipe=recipe, epochs=epochs, workers=1, size=64,
                             precision="fp32", **kw))


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A trained fastcnn run on a generated 3-class folder, shared by the tests that only read it."""
    from imgclf.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("small_run")
    ds = prepare(PrepareConfig(src=make_folder(root / "src", classes=("red", "green", "blue"), n=20),
                               out=root / "data", workers=1))
    train_small_fastcnn(ds.root, root / "run")
    return root / "run"


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_page(p, viewport=(1200, 900)):
    """(browser, page) on Debian's Chromium (Playwright never downloads one here), page errors
    collected in page.errors."""
    import shutil

    browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return browser, page
