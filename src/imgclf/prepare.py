"""Stage 1: scan a source folder, decode every file once, drop bad and duplicate images, split.

Writes DATA/manifest.csv, dataset.json, rejected.csv, duplicates.csv; never touches SRC.

With a cache size (`imgclf prepare --cache`, and train or compare on a raw folder whose input
size is known) the one decode is the cache's: each file's header is checked first (~3 us
against ~100 for a 1/8-scale check), the split is drawn, and the cache's workers decode the
files straight into their rows, their verdicts becoming prepare's. A file whose header passed
but whose data does not decode is rejected as always; the split is then drawn again without it
and the cache built afterwards, so the dataset is the same as with two passes, whichever path ran.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from .cache import decode_splits, finish_cache, open_cache
from .decode import check_header, check_image, read_file
from .errors import DecodeError, ImgclfError
from .files import is_inside, prepare_out_dir, write_csv, write_json
from .manifest import MANIFEST_COLUMNS, Dataset, load_dataset
from .progress import default_workers, pmap
from .scan import scan
from .split import SPLITS, assign_splits, check_fractions

MATERIALIZE = ("none", "copy", "hardlink", "symlink")


@dataclass
class PrepareConfig:
    src: Path
    out: Path
    labels_from_filename: bool = False
    val: float = 0.07  # the tutorial's fractions
    test: float = 0.30
    seed: int = 0
    materialize: str = "none"
    workers: int = field(default_factory=default_workers)
    force: bool = False
    # A CSV with a `path` column (imgclf audit's audit.csv): those files are left out, or relabelled
    # where an `action` column says relabel (to `suggested`). Recorded in dataset.json and excluded.csv.
    exclude: Path | None = None
    cache: int | None = None  # also decode into the cache at this size (px), in the same pass

    def validate(self) -> None:
        check_fractions(self.val, self.test)
        if self.cache is not None and not 8 <= self.cache <= 1024:
            raise ImgclfError(f"--cache must be between 8 and 1024 px, got {self.cache}")
        if self.materialize not in MATERIALIZE:
            raise ImgclfError(f"--materialize must be one of {', '.join(MATERIALIZE)}, got '{self.materialize}'")
        if self.workers < 1:
            raise ImgclfError(f"--workers must be >= 1, got {self.workers}")
        if is_inside(self.out, self.src):
            raise ImgclfError(f"--out {self.out} is inside the source {self.src}; imgclf never writes into a dataset")
        if is_inside(self.src, self.out):
            raise ImgclfError(f"--out {self.out} contains the source {self.src}; choose a separate folder")


def check_file(path: Path, decode: bool = True) -> tuple[str, int, int, str, str]:
    """Worker: read, hash and decode one file -> (path, width, height, sha256, reject reason).

    `check_image` decodes JPEGs at 1/8 scale, which rejects exactly what a full decode rejects;
    decode=False checks the header alone, for a caller that decodes the file next."""
    try:
        data = read_file(path)
    except DecodeError as e:
        return str(path), 0, 0, "", str(e)
    sha = hashlib.sha256(data).hexdigest()
    try:
        width, height = (check_image if decode else check_header)(data)
    except DecodeError as e:
        return str(path), 0, 0, sha, str(e)
    return str(path), width, height, sha, ""


def prepare(cfg: PrepareConfig) -> Dataset:
    """Run the whole stage and return the loaded dataset."""
    cfg.src, cfg.out = Path(cfg.src), Path(cfg.out)
    cfg.validate()
    found = scan(cfg.src, cfg.labels_from_filename)
    out = prepare_out_dir(cfg.out, cfg.force, "dataset")

    files, excluded, edits = found.files, [], {}
    if cfg.exclude is not None:
        from .audit import read_exclusions

        drop, relabel = read_exclusions(cfg.exclude)
        unknown = sorted(set(relabel.values()) - set(found.classes))
        if unknown:
            raise ImgclfError(f"--exclude {cfg.exclude} relabels to classes not in {cfg.src}: {', '.join(unknown)}")
        excluded = [(str(p), c, "excluded") for p, c in files if str(p) in drop]
        edits = {str(p): (c, relabel[str(p)]) for p, c in files if str(p) in relabel and str(p) not in drop}
        files = [(p, edits.get(str(p), (c, c))[1]) for p, c in files if str(p) not in drop]
        excluded += [(p, old, f"relabelled {new}") for p, (old, new) in edits.items()]
    paths = [p for p, _ in files]
    label_of = {str(p): c for p, c in files}
    fused = cfg.cache is not None
    checked = list(pmap(partial(check_file, decode=not fused), paths, cfg.workers,
                        "read" if fused else "decode", chunksize=64))

    good, rejected, duplicates = [], [], []
    first_by_sha: dict[str, tuple[str, str]] = {}
    for path, w, h, sha, reason in checked:
        cls = label_of[path]
        if reason:
            rejected.append((path, cls, reason))
            continue
        if sha in first_by_sha:  # exact duplicate: keep the first (sorted order), list the rest
            kept, kept_cls = first_by_sha[sha]
            note = "same class" if kept_cls == cls else f"conflicting class: kept as {kept_cls}"
            duplicates.append((path, cls, kept, note))
            continue
        first_by_sha[sha] = (path, cls)
        good.append((path, cls, w, h, sha))

    splits = _split(cfg, good)
    cached = None  # the cache decoded in this pass, made visible once the manifest is written
    if fused and good:
        good, cached, failed = _decode_into_cache(cfg, out, good, splits)
        if failed:  # the split is drawn again without them, as a two-pass prepare draws it
            splits = _split(cfg, good)
            order = {str(p): i for i, p in enumerate(paths)}
            rejected = sorted(rejected + failed, key=lambda r: order[r[0]])  # and listed in its order
    try:
        ds = _write_dataset(cfg, out, found, good, splits, rejected, duplicates, excluded, edits)
    except BaseException:
        if cached is not None:  # no manifest, no cache: nothing half-made is left under out/cache
            shutil.rmtree(cached, ignore_errors=True)
        raise
    if cached is not None:
        finish_cache(cached, ds, cfg.cache)
    elif fused:
        open_cache(ds, cfg.cache, workers=cfg.workers)  # a file failed to decode: built on the final split
    return ds


def _split(cfg: PrepareConfig, good: list) -> list[str]:
    """Each good file's split: what the manifest says, and what a cache decoded before it used."""
    return assign_splits([c for _, c, *_ in good], cfg.val, cfg.test, cfg.seed)


def _write_dataset(cfg: PrepareConfig, out: Path, found, good: list, splits: list[str], rejected: list,
                   duplicates: list, excluded: list, edits: dict) -> Dataset:
    """Write manifest.csv (the good files on their splits), the CSVs, dataset.json (and the
    laid-out folders); returns the dataset as loaded back."""
    if not good:
        raise ImgclfError(f"no decodable images in {cfg.src}; see {out / 'rejected.csv'}")
    classes = sorted({c for _, c, *_ in good})
    if len(classes) < 2:
        write_csv(out / "rejected.csv", ["path", "class", "reason"], rejected)
        raise ImgclfError(f"only class {classes[0]} has decodable images; need at least 2")

    rows = [(p, c, s, w, h, sha) for (p, c, w, h, sha), s in zip(good, splits)]
    write_csv(out / "manifest.csv", MANIFEST_COLUMNS, rows)
    write_csv(out / "rejected.csv", ["path", "class", "reason"], rejected)
    write_csv(out / "duplicates.csv", ["path", "class", "duplicate_of", "note"], duplicates)

    counts = {s: {c: 0 for c in classes} for s in SPLITS}
    for _, c, s, *_ in rows:
        counts[s][c] += 1
    info = {
        "classes": classes,
        "counts": counts,
        "total": len(rows),
        "rejected": len(rejected),
        "duplicates": len(duplicates),
        "ignored_files": found.ignored,
        "warnings": found.warnings,
        "source": str(cfg.src.resolve()),
        "labels_from_filename": cfg.labels_from_filename,
        "seed": cfg.seed,
        "fractions": {"train": round(1 - cfg.val - cfg.test, 6), "val": cfg.val, "test": cfg.test},
        "materialize": cfg.materialize,
        **({"exclude": {"file": str(Path(cfg.exclude).resolve()), "sha256": _sha256(Path(cfg.exclude)),
                        "excluded": sum(r[2] == "excluded" for r in excluded), "relabelled": len(edits),
                        "listed_in": "excluded.csv"}} if cfg.exclude is not None else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if cfg.exclude is not None:
        write_csv(out / "excluded.csv", ["path", "class", "action"], excluded)
    write_json(out / "dataset.json", info)
    if cfg.materialize != "none":
        materialize(rows, out, cfg.materialize)
    return load_dataset(out)


def _decode_into_cache(cfg: PrepareConfig, out: Path, good: list, splits: list[str]) -> tuple[list, Path | None, list]:
    """Decode the files that passed their header check into a cache at cfg.cache, on the split they
    get if all of them decode. Returns (the files that decoded, with their sizes as shown; the
    cache's temp folder, or None when some failed and the split changes; the failed as
    rejected rows)."""
    index = {c: i for i, c in enumerate(sorted({c for _, c, *_ in good}))}
    by_split = {s: [g for g, gs in zip(good, splits) if gs == s] for s in SPLITS}
    tmp, results = decode_splits(out, cfg.cache, {s: [(p, sha) for p, _, _, _, sha in g] for s, g in by_split.items()},
                                 {s: [index[c] for _, c, *_ in g] for s, g in by_split.items()}, cfg.workers)
    verdict = {g[0]: r for g, r in zip((g for s in SPLITS for g in by_split[s]), results)}
    decoded = [(p, c, *verdict[p], sha) for p, c, _, _, sha in good if not isinstance(verdict[p], str)]
    failed = [(p, c, verdict[p]) for p, c, *_ in good if isinstance(verdict[p], str)]
    if failed:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp = None
    return decoded, tmp, failed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def materialize(rows, out: Path, how: str) -> None:
    """Lay out DATA/<split>/<class>/<file> the tutorial's way (copies or links of the originals)."""
    used: set[Path] = set()
    for path, cls, split, *_ in rows:
        src = Path(path)
        dst = out / split / cls / src.name
        n = 1
        while dst in used:  # same file name from different sub-folders
            dst = dst.with_name(f"{src.stem}_{n}{src.suffix}")
            n += 1
        used.add(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            if how == "copy":
                shutil.copy2(src, dst)
            elif how == "hardlink":
                os.link(src, dst)
            else:
                os.symlink(src.resolve(), dst)
        except OSError as e:
            raise ImgclfError(f"--materialize {how} failed for {src} -> {dst}: {e.strerror or e}") from None


def summary_rows(ds: Dataset) -> tuple[list[str], list[list[str]]]:
    """Counts per split and class, for the printed table."""
    counts = ds.info["counts"]
    header = ["split", *ds.classes, "total"]
    body = []
    for s in SPLITS:
        per = [counts[s].get(c, 0) for c in ds.classes]
        body.append([s, *map(str, per), str(sum(per))])
    tot = [sum(counts[s].get(c, 0) for s in SPLITS) for c in ds.classes]
    body.append(["all", *map(str, tot), str(sum(tot))])
    return header, body


def ensure_prepared(data: Path | str, fallback_out: Path, seed: int = 0, cache: int | None = None) -> Path:
    """`data` if it is a prepared dataset; a raw folder of class sub-folders is prepared into
    `fallback_out` first (the tutorial's default split), so train/compare take either; `cache`:
    the input size the caller trains at, decoded in the same pass."""
    data = Path(data)
    if (data / "manifest.csv").is_file():
        return data
    if (fallback_out / "manifest.csv").is_file():
        return fallback_out  # prepared by an earlier call (a resumed comparison, say)
    if not data.is_dir():
        raise ImgclfError(f"{data} does not exist; pass a folder of class sub-folders or one written by `imgclf prepare`")
    from .progress import console

    console.print(f"{data} is not prepared yet: preparing it into {fallback_out} (test 0.30, val 0.07, seed {seed})")
    prepare(PrepareConfig(src=data, out=fallback_out, seed=seed, cache=cache))
    return fallback_out
