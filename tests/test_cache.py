import csv

import numpy as np
import pytest

from imgclf.cache import cache_dir, open_cache
from imgclf.decode import read_and_decode
from imgclf.errors import ImgclfError
from imgclf.manifest import load_dataset


def test_cache_round_trips_pixels_exactly(prepared):
    splits = open_cache(prepared, 24, workers=1)
    for name, sp in splits.items():
        assert sp.images.shape == (len(prepared.split_rows(name)), 24, 24, 3)
        for i, path in enumerate(sp.paths):
            assert np.array_equal(sp.images[i], read_and_decode(path, 24)), path
        assert list(sp.labels) == prepared.labels(prepared.split_rows(name))


@pytest.mark.parametrize("max_held", [64 << 20, 20_000])
def test_mixed_sizes_round_trip_exactly(tmp_path, monkeypatch, max_held):
    # Workers resize same-shaped images together and place the rest row by row; with a small
    # `_MAX_HELD` they resize mid-chunk. Either way each row is what a direct decode gives.
    from conftest import COLORS, make_image

    from imgclf import cache
    from imgclf.prepare import PrepareConfig, prepare

    sizes = [(40, 32), (64, 48), (40, 32), (90, 90), (40, 32), (17, 23), (300, 200)]
    for c in ("red", "blue"):
        for i in range(14):
            make_image(tmp_path / "src" / c / f"{c}_{i}.jpg", COLORS[c], size=sizes[i % len(sizes)], seed=i)
        make_image(tmp_path / "src" / c / f"{c}_png.png", COLORS[c], size=(33, 31))
    monkeypatch.setattr(cache, "_MAX_HELD", max_held)
    ds = prepare(PrepareConfig(src=tmp_path / "src", out=tmp_path / "d", workers=1))
    for size in (24, 48):
        for sp in open_cache(ds, size, workers=1).values():
            for i, path in enumerate(sp.paths):
                assert np.array_equal(sp.images[i], read_and_decode(path, size)), (path, size)


def test_cache_parallel_build_matches_serial(tmp_path, image_folder, monkeypatch):
    from imgclf.prepare import PrepareConfig, prepare

    monkeypatch.setattr("imgclf.progress._MIN_PARALLEL", 0)  # use the process pool even for a small job
    ds = prepare(PrepareConfig(src=image_folder, out=tmp_path / "d", workers=1))
    a = {k: np.array(v.images) for k, v in open_cache(ds, 16, workers=1).items()}
    import shutil

    shutil.rmtree(tmp_path / "d" / "cache")
    b = {k: np.array(v.images) for k, v in open_cache(ds, 16, workers=2).items()}
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_stale_cache_is_rebuilt(prepared):
    open_cache(prepared, 16, workers=1)
    old = cache_dir(prepared, 16)
    # Edit the manifest: move one image from test to train, as a re-split would.
    path = prepared.root / "manifest.csv"
    rows = list(csv.DictReader(path.open()))
    i = next(i for i, r in enumerate(rows) if r["split"] == "test")
    rows[i]["split"] = "train"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    ds2 = load_dataset(prepared.root)
    new = cache_dir(ds2, 16)
    assert new != old
    splits = open_cache(ds2, 16, workers=1)
    assert len(splits["train"]) == len(ds2.split_rows("train"))
    assert not old.exists()  # the stale one was reclaimed


def test_a_second_build_of_the_same_cache_leaves_the_first_in_place(prepared):
    # Two runs on one dataset build the same cache at once: the one that finishes second must
    # not delete the files the first is reading (it keeps them; the bytes are the same).
    from imgclf.cache import build_cache

    first = open_cache(prepared, 16, workers=1)
    d = cache_dir(prepared, 16)
    inode = (d / "test-images.npy").stat().st_ino
    assert build_cache(prepared, 16, workers=1) == d  # the other run's build, finishing now
    assert (d / "test-images.npy").stat().st_ino == inode
    assert not list((prepared.root / "cache").glob(".tmp-*"))  # its own copy dropped
    again = open_cache(prepared, 16, build=False)
    assert all(np.array_equal(first[s].images, again[s].images) for s in first)


def test_a_broken_cache_folder_is_replaced(prepared):
    d = cache_dir(prepared, 16)
    d.mkdir(parents=True)
    (d / "train-images.npy").write_bytes(b"half")  # no meta.json: not a finished cache
    splits = open_cache(prepared, 16, workers=1)
    assert len(splits["train"]) == len(prepared.split_rows("train")) and (d / "meta.json").is_file()


def test_changed_image_is_detected(prepared):
    p = prepared.rows[0]["path"]
    with open(p, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ImgclfError, match="changed since prepare"):
        open_cache(prepared, 16, workers=1)


def test_cache_refuses_when_disk_too_small(prepared, monkeypatch):
    import shutil

    from imgclf import cache

    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(ImgclfError, match="MiB free"):
        open_cache(prepared, 64, workers=1)
    assert not list((prepared.root / "cache").glob("*"))


def test_a_split_held_as_a_tensor_yields_the_same_batches(prepared):
    """On a GPU `resident` turns a split's memmap into a device tensor and `batches` gathers on the
    device; CI has no GPU, so the same branch runs here on a CPU tensor: identical batches."""
    import torch

    from imgclf.cache import CachedSplit
    from imgclf.load import batches, resident

    split = open_cache(prepared, 16, workers=1)["train"]
    assert resident(split, torch.device("cpu")) is split  # CPU: stays memory-mapped
    held = CachedSplit(torch.from_numpy(np.array(split.images)), split.labels, split.paths)
    for kw in ({"shuffle": False}, {"shuffle": True, "drop_last": True}):
        got = [list(batches(s, 7, generator=torch.Generator().manual_seed(3), with_index=True, **kw))
               for s in (split, held)]
        assert len(got[0]) == len(got[1]) > 1
        for a, b in zip(*got):
            assert all(torch.equal(u, v) for u, v in zip(a, b))
