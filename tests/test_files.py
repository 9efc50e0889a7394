"""Atomic writes: old or new file, never half; readable like any file the user makes."""

import os
import stat

from imgclf.files import atomic_write_bytes, write_json


def test_atomic_writes_get_the_users_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        from imgclf import files

        files._umask.cache_clear()
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
        files._umask.cache_clear()
    for name in ("a.bin", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644  # 0666 less the umask, as `touch` makes
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "keep.txt"
    atomic_write_bytes(p, b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    try:
        atomic_write_bytes(p, b"new")
    except OSError:
        pass
    assert p.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))
