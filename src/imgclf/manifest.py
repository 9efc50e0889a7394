"""Read a prepared dataset folder: manifest.csv + dataset.json, validated."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import ImgclfError
from .files import read_csv, read_json
from .split import SPLITS

MANIFEST_COLUMNS = ["path", "class", "split", "width", "height", "sha256"]


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    rows: list[dict[str, str]]  # manifest rows in file order
    info: dict
    manifest_sha256: str  # identity of this exact manifest: the cache key builds on it

    def split_rows(self, split: str) -> list[dict[str, str]]:
        if split not in SPLITS:
            raise ImgclfError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
        return [r for r in self.rows if r["split"] == split]

    def labels(self, rows: list[dict[str, str]]) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[r["class"]] for r in rows]


def load_dataset(root: Path | str) -> Dataset:
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        hint = (
            f"run `imgclf prepare {root} --out DATA` first and pass DATA"
            if root.is_dir()
            else "pass the folder written by `imgclf prepare`"
        )
        raise ImgclfError(f"{root} is not a prepared dataset (no manifest.csv); {hint}")
    info = read_json(root / "dataset.json")
    rows = read_csv(manifest)
    if rows and set(MANIFEST_COLUMNS) - set(rows[0]):
        raise ImgclfError(f"{manifest} lacks columns {sorted(set(MANIFEST_COLUMNS) - set(rows[0]))}")
    classes = list(info.get("classes", []))
    unknown = {r["class"] for r in rows} - set(classes)
    if unknown:
        raise ImgclfError(f"{manifest} has classes {sorted(unknown)} missing from dataset.json")
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return Dataset(root=root, classes=classes, rows=rows, info=info, manifest_sha256=sha)
