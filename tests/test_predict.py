"""predict: files and folders in, one row per file out, unreadable files on their own row."""

import pytest
from conftest import COLORS, make_image

from imgclf.errors import ImgclfError
from imgclf.predict import predict


def test_files_folders_and_bad_files(small_run, tmp_path):
    run = small_run
    make_image(tmp_path / "imgs" / "a.jpg", COLORS["red"], size=(50, 40), seed=1)
    make_image(tmp_path / "imgs" / "sub" / "b.png", COLORS["blue"], size=(30, 30), seed=2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    rows = predict(run, [tmp_path / "imgs"], top_k=2)
    by = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by) == {"a.jpg", "b.png", "broken.jpg"}
    assert by["a.jpg"]["class"] == "red" and by["b.png"]["class"] == "blue"
    assert len(by["a.jpg"]["top_k"]) == 2 and by["a.jpg"]["top_k"][0][0] == "red"
    assert sum(by["a.jpg"]["probs"].values()) == pytest.approx(1, abs=1e-5)
    assert not by["broken.jpg"]["class"] and by["broken.jpg"]["error"] and by["a.jpg"]["error"] == ""
    missing = predict(run, [tmp_path / "missing.jpg"])
    assert not missing[0]["class"] and missing[0]["error"]  # reported on its row, not fatal
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImgclfError, match="no image files"):
        predict(run, [tmp_path / "empty"])
