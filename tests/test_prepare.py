import csv
import json

import pytest
from conftest import COLORS, make_folder, make_image

from imgclf.errors import ImgclfError
from imgclf.prepare import PrepareConfig, prepare


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_rejects_bad_files_and_drops_duplicates(tmp_path):
    src = make_folder(tmp_path / "src", n=10)
    (src / "red" / "zero.jpg").write_bytes(b"")
    (src / "red" / "text.jpg").write_text("definitely not a jpeg")
    good = (src / "blue" / "blue_0.jpg").read_bytes()
    (src / "blue" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (src / "blue" / "copy.jpg").write_bytes(good)  # exact duplicate
    ds = prepare(PrepareConfig(src=src, out=tmp_path / "data", workers=1))

    rejected = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in read(tmp_path / "data" / "rejected.csv")}
    assert set(rejected) == {"zero.jpg", "text.jpg", "trunc.jpg"}
    assert "empty" in rejected["zero.jpg"] and "not an image" in rejected["text.jpg"]
    assert "truncated" in rejected["trunc.jpg"]
    dups = read(tmp_path / "data" / "duplicates.csv")
    assert len(dups) == 1 and dups[0]["path"].endswith("copy.jpg")

    rows = read(tmp_path / "data" / "manifest.csv")
    assert list(rows[0]) == ["path", "class", "split", "width", "height", "sha256"]
    assert len(rows) == 20 and len({r["sha256"] for r in rows}) == 20
    info = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert info["classes"] == ["blue", "red"] and info["seed"] == 0
    assert info["fractions"] == {"train": 0.63, "val": 0.07, "test": 0.3}
    assert sum(sum(v.values()) for v in info["counts"].values()) == 20
    assert ds.classes == ["blue", "red"]


def test_prepare_same_seed_same_split(tmp_path):
    src = make_folder(tmp_path / "src", n=20)
    a = prepare(PrepareConfig(src=src, out=tmp_path / "a", seed=3, workers=1))
    b = prepare(PrepareConfig(src=src, out=tmp_path / "b", seed=3, workers=1))
    assert [r["split"] for r in a.rows] == [r["split"] for r in b.rows]


def test_prepare_refuses_overwrite_and_writing_into_source(tmp_path):
    src = make_folder(tmp_path / "src", n=5)
    out = tmp_path / "data"
    prepare(PrepareConfig(src=src, out=out, workers=1))
    with pytest.raises(ImgclfError, match="--force"):
        prepare(PrepareConfig(src=src, out=out, workers=1))
    prepare(PrepareConfig(src=src, out=out, workers=1, force=True))
    with pytest.raises(ImgclfError, match="inside the source"):
        prepare(PrepareConfig(src=src, out=src / "data", workers=1))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ImgclfError, match="not made by imgclf"):
        prepare(PrepareConfig(src=src, out=foreign, workers=1, force=True))
    assert (foreign / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("how", ["copy", "hardlink", "symlink"])
def test_materialize(tmp_path, how):
    src = make_folder(tmp_path / "src", n=5)
    ds = prepare(PrepareConfig(src=src, out=tmp_path / "d", materialize=how, workers=1))
    laid = sorted(p.relative_to(tmp_path / "d").parts[:2] for p in (tmp_path / "d").glob("*/*/*.jpg"))
    assert len(laid) == len(ds.rows)
    assert {s for s, _ in laid} <= {"train", "val", "test"}


def test_prepare_parallel_matches_serial(tmp_path, monkeypatch):
    monkeypatch.setattr("imgclf.progress._MIN_PARALLEL", 0)  # use the process pool even for a small job
    src = make_folder(tmp_path / "src", n=150)
    a = prepare(PrepareConfig(src=src, out=tmp_path / "a", workers=1))
    b = prepare(PrepareConfig(src=src, out=tmp_path / "b", workers=2))
    assert a.rows == b.rows


def test_labels_from_filename(tmp_path):
    for i in range(6):
        make_image(tmp_path / "flat" / f"cat.{i}.jpg", COLORS["red"], seed=i)
        make_image(tmp_path / "flat" / f"dog.{i}.jpg", COLORS["blue"], seed=100 + i)
    ds = prepare(PrepareConfig(src=tmp_path / "flat", out=tmp_path / "d", labels_from_filename=True, workers=1))
    assert ds.classes == ["cat", "dog"] and len(ds.rows) == 12


@pytest.mark.parametrize("undecodable", [False, True])
def test_prepare_with_a_cache_decodes_each_file_once_into_the_same_dataset(tmp_path, monkeypatch, undecodable):
    """--cache: the cache's decode is prepare's check (no 1/8-scale check runs), and the manifest,
    the CSVs and the cached pixels are exactly those of prepare followed by a cache build. Also
    when a file's header passes but its data does not decode: it is rejected, and the split is
    drawn without it (the cache is then built on that split)."""
    import numpy as np
    from PIL import Image

    from imgclf import prepare as prepare_module
    from imgclf.cache import cache_dir, open_cache
    from imgclf.decode import check_header

    src = make_folder(tmp_path / "src", n=12)
    (src / "red" / "zero.jpg").write_bytes(b"")
    (src / "red" / "text.jpg").write_text("definitely not a jpeg")
    good = (src / "blue" / "blue_0.jpg").read_bytes()
    (src / "blue" / "copy.jpg").write_bytes(good)  # exact duplicate
    make_image(src / "red" / "red_png.jpg", COLORS["red"], size=(30, 20), seed=7, fmt="PNG")  # PNG in disguise
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: width and height swap
    Image.open(src / "blue" / "blue_1.jpg").save(src / "blue" / "turned.jpg", exif=exif)
    if undecodable:
        big = make_image(tmp_path / "big.jpg", COLORS["blue"], size=(200, 160)).read_bytes()
        (src / "blue" / "trunc.jpg").write_bytes(big[: len(big) * 2 // 3])
        check_header(big[: len(big) * 2 // 3])  # passes the header check: only the decode finds it out

    two = prepare(PrepareConfig(src=src, out=tmp_path / "two", workers=1))
    expected = open_cache(two, 24, workers=1)

    def no_check(data):
        raise AssertionError("a file was decoded twice")

    monkeypatch.setattr(prepare_module, "check_image", no_check)
    one = prepare(PrepareConfig(src=src, out=tmp_path / "one", workers=1, cache=24))
    for name in ("manifest.csv", "rejected.csv", "duplicates.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    assert any(r["path"].endswith("turned.jpg") and r["width"] == "32" for r in one.rows)  # 40x32 shown as 32x40
    assert ("trunc.jpg" in (tmp_path / "one" / "rejected.csv").read_text()) == undecodable
    got = open_cache(one, 24, build=False)
    for s in expected:
        assert np.array_equal(got[s].images, expected[s].images) and np.array_equal(got[s].labels, expected[s].labels)
    assert [p.name for p in (tmp_path / "one" / "cache").iterdir()] == [cache_dir(one, 24).name]  # no temp folder left


def test_prepare_with_a_cache_that_fails_after_decoding_leaves_no_half_made_cache(tmp_path, monkeypatch):
    from imgclf import prepare as prepare_module

    def cannot_link(rows, out, how):
        raise ImgclfError("--materialize hardlink failed")

    monkeypatch.setattr(prepare_module, "materialize", cannot_link)
    src = make_folder(tmp_path / "src", n=5)
    with pytest.raises(ImgclfError, match="hardlink failed"):
        prepare(PrepareConfig(src=src, out=tmp_path / "d", workers=1, cache=16, materialize="hardlink"))
    assert list((tmp_path / "d" / "cache").iterdir()) == []  # the decoded rows went with the failure
