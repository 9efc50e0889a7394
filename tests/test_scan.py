"""scan: class folders and Kaggle-style names, hidden files, empty classes, symlink loops."""

import pytest
from conftest import COLORS, make_image

from imgclf.errors import ImgclfError
from imgclf.scan import scan


def test_scan_folders_ignores_hidden_and_non_images(tmp_path):
    for c in ("cat", "dog"):
        make_image(tmp_path / c / "a b é.jpg", COLORS["red"])
        (tmp_path / c / "Thumbs.db").write_bytes(b"x")
        (tmp_path / c / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    res = scan(tmp_path)
    assert res.classes == ["cat", "dog"]
    assert len(res.files) == 2 and res.ignored == 4


def test_scan_filenames_kaggle_style(tmp_path):
    for name in ["cat.1.jpg", "cat.12.jpg", "dog.7.jpg", "notes.txt", "weird.jpg"]:
        make_image(tmp_path / name, COLORS["red"]) if name.endswith(".jpg") else (tmp_path / name).write_text("x")
    res = scan(tmp_path, labels_from_filename=True)
    assert res.classes == ["cat", "dog"]
    assert [c for _, c in res.files] == ["cat", "cat", "dog"]


def test_scan_errors(tmp_path):
    with pytest.raises(ImgclfError, match="does not exist"):
        scan(tmp_path / "nope")
    make_image(tmp_path / "only" / "1.jpg", COLORS["red"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImgclfError, match="at least 2 classes"):
        scan(tmp_path)


def test_scan_empty_class_folder_is_left_out_with_warning(tmp_path):
    for c in ("a", "b"):
        make_image(tmp_path / c / "1.jpg", COLORS["red"])
    (tmp_path / "c").mkdir()
    res = scan(tmp_path)
    assert res.classes == ["a", "b"] and "'c' has no image" in res.warnings[0]


def test_scan_survives_symlink_loop(tmp_path):
    for c in ("a", "b"):
        make_image(tmp_path / c / "1.jpg", COLORS["red"])
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")
    assert len(scan(tmp_path).files) == 2
