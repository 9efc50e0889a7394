"""Small file helpers: atomic writes, JSON/CSV, and the 'never overwrite without --force' rule."""

from __future__ import annotations

import csv
import errno
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import ImgclfError


def _disk_full_error(path: Path, err: OSError) -> ImgclfError:
    return ImgclfError(
        f"disk full while writing {path}: the previous version (if any) is intact; "
        f"free some space and run again ({err.strerror})"
    )


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash or a full disk at any point leaves either the old file or the new one, never half.
    The file gets the permissions any file the user makes gets (0666 less the umask: mkstemp's
    0600 would hide a shared report or model from a teammate or a web server), and the folder is
    fsynced after the rename so the new name survives a power cut too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _disk_full_error(path, e) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask, read once: reading it means setting it, which is not thread-safe."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory handles (Windows): the rename is what they offer
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImgclfError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImgclfError(f"{path} is not valid JSON ({e}); was it edited or cut short?") from None


def write_csv(path: Path | str, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path | str) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise ImgclfError(f"{path} not found") from None


MARKER = ".imgclf"


def check_out_dir(out: Path, force: bool, kind: str) -> Path:
    """Raise unless `out` may be written: new, empty, or (with `force`) a folder imgclf made."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ImgclfError(f"{kind} folder {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ImgclfError(
                f"{kind} folder {out} is not empty; pass --force to replace it, or choose another path"
            )
        if not (out / MARKER).exists():
            raise ImgclfError(
                f"{out} was not made by imgclf (no {MARKER} marker); refusing to delete it even "
                "with --force: choose an empty or new folder"
            )
    return out


def prepare_out_dir(out: Path, force: bool, kind: str) -> Path:
    """Create output folder `out` for a `kind` of result (dataset, run, comparison, demo).

    A non-empty folder is refused unless `force`; even then only a folder that imgclf itself
    made (it holds the `.imgclf` marker) is cleared, so a mistyped path never deletes user files.
    """
    out = check_out_dir(out, force, kind)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(kind + "\n")
    return out


def is_inside(child: Path, parent: Path) -> bool:
    child, parent = Path(child).resolve(), Path(parent).resolve()
    return child == parent or parent in child.parents
