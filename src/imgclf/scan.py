"""Find labelled image files: one sub-folder per class, or Kaggle-style names (`cat.12.jpg`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .decode import IMAGE_EXTENSIONS
from .errors import ImgclfError

# `cat.12.jpg`, `dog_7.png`, `golden-retriever.003.jpeg` -> the label is the part before the id.
_FILENAME_LABEL = re.compile(r"^(?P<label>.+?)[._-]\d+\.[^.]+$")


@dataclass
class ScanResult:
    files: list[tuple[Path, str]]  # (path, class), sorted by class then path
    classes: list[str]
    ignored: int = 0  # non-image or hidden files skipped silently
    warnings: list[str] = field(default_factory=list)


def scan(src: Path | str, labels_from_filename: bool = False, min_classes: int = 2) -> ScanResult:
    """List candidate image files and their classes under `src`; decoding happens later.
    Training needs 2 classes; scoring a run on a folder (evaluate) can take one.

    Paths come back absolute, so a prepared dataset works from any working directory.
    """
    src = Path(src).absolute()
    if not src.exists():
        raise ImgclfError(f"source folder {src} does not exist")
    if not src.is_dir():
        raise ImgclfError(f"source {src} is not a folder; pass the folder that holds the class folders")
    result = _scan_filenames(src) if labels_from_filename else _scan_folders(src)
    counts = {c: 0 for c in result.classes}
    for _, c in result.files:
        counts[c] += 1
    for c in [c for c, n in counts.items() if n == 0]:
        result.warnings.append(f"class folder '{c}' has no image files; it is left out")
        result.classes.remove(c)
    if len(result.classes) < min_classes:
        found = ", ".join(result.classes) or "none"
        hint = (
            "use --labels-from-filename for a flat folder of names like cat.12.jpg"
            if not labels_from_filename
            else "file names must look like <class>.<number>.<ext>"
        )
        raise ImgclfError(f"{src}: need at least {min_classes} class{'es' if min_classes > 1 else ''} with images, "
                          f"found {found}; {hint}")
    return result


def _scan_folders(src: Path) -> ScanResult:
    classes = sorted(
        d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    files: list[tuple[Path, str]] = []
    ignored = 0
    for c in classes:
        found, skipped = _walk_images(src / c)
        files += [(p, c) for p in found]
        ignored += skipped
    if not classes:
        loose = sum(1 for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if loose:
            raise ImgclfError(
                f"{src} holds {loose} images but no class sub-folders; "
                "use --labels-from-filename if names look like cat.12.jpg"
            )
    return ScanResult(files=files, classes=classes, ignored=ignored)


def _scan_filenames(src: Path) -> ScanResult:
    found, ignored = _walk_images(src, recursive=False)
    files = []
    for p in found:
        m = _FILENAME_LABEL.match(p.name)
        if m:
            files.append((p, m.group("label").lower()))
        else:
            ignored += 1
    classes = sorted({c for _, c in files})
    files.sort(key=lambda t: (t[1], str(t[0])))
    return ScanResult(files=files, classes=classes, ignored=ignored)


def _walk_images(root: Path, recursive: bool = True) -> tuple[list[Path], int]:
    """Image files under root, sorted; hidden entries and other files counted as ignored.

    Symlinked folders are not followed (os.walk default), so link loops cannot trap the scan.
    Unreadable folders are skipped; unreadable files surface later as rejected.
    """
    out, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            out.append(Path(dirpath) / name)
    out.sort()
    return out, ignored
