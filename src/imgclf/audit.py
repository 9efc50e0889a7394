"""Find the images that are wrong: label errors, near-duplicates, and images unlike any class.

    imgclf audit DATA --out AUDIT      ->  AUDIT/audit.csv, AUDIT/audit.html, AUDIT/audit.json

1. Every image gets out-of-sample class probabilities: the dataset's images (all splits) go
   through the frozen ImageNet backbone once (the probe's cached features, pretrained.py), and a
   logistic regression is cross-fitted over `folds` stratified folds, so no image is scored by a
   model that saw its label.
2. Label issues: confident learning (Northcutt et al., 2021) through the `cleanlab` library,
   which estimates the joint distribution of given and true labels from those probabilities and
   flags the images it attributes to the off-diagonal ("label", action exclude). Images the
   model disagrees with that it does not count as errors are listed for review ("review", action
   keep). Both ranked by self-confidence, the probability the model gives the image's own label.
3. Near-duplicates: pairs whose features have cosine similarity >= `dup_threshold` (prepare has
   already dropped byte-identical files), most of all pairs that straddle train/val/test.
4. Outliers: images whose features are far from their nearest neighbours (cleanlab's
   OutOfDistribution, k-nearest-neighbour distance): robust z-score above `outlier_z`.

Each threshold is measured in BENCHMARKS.md ("Label audit"). `prepare --exclude AUDIT/audit.csv`
acts on the result and records it in dataset.json.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImgclfError
from .files import atomic_write_text, prepare_out_dir, write_csv, write_json
from .progress import default_workers

AUDIT_COLUMNS = ["path", "split", "given", "suggested", "score", "kind", "action", "detail"]
KINDS = ("label", "review", "duplicate", "outlier")
FEATURE_MODEL = "efficientnet-lite0"  # its frozen ImageNet features score every image (seconds per 10k)


@dataclass
class AuditConfig:
    data: Path  # a prepared dataset folder
    out: Path
    folds: int = 5
    seed: int = 0
    # Cosine similarity of the 1,280-d features from which two images count as near-duplicates.
    # Altered copies of 200 PetImages against their originals at 0.90: re-encoded 100%, resized to
    # 80% 95.5%, cropped 5% a side 90%, all three 64% found; the nearest other image of 99.9% of the
    # 10k PetImages is below 0.872, and 0.90 flags the same 3 pairs there as 0.95 does
    # (BENCHMARKS.md, "Label audit").
    dup_threshold: float = 0.90
    outlier_z: float = 5.0  # robust z-score of the k-NN distance; 5: a few per thousand on PetImages
    # The logistic regression's regularisation, as C x (images it is fitted on), so that the
    # penalty per image stays the same at any folder size. Strong on purpose: a flexible model
    # learns the wrong labels it is meant to find. 5% planted flips on 10k PetImages (seed 0, ~8,000
    # images per fit), C 0.5 / 0.1 / 0.02 / 0.002 / 0.001 / 0.0003: precision 51 / 65 / 80 / 92 /
    # 93 / 93%, recall 88 / 89 / 91 / 93 / 94 / 95% (BENCHMARKS.md, "Label audit"). 8 = 0.001 x 8,000.
    C_per_image: float = 8.0
    page_rows: int = 120  # images shown per kind in audit.html (audit.csv lists all)
    workers: int = field(default_factory=default_workers)
    force: bool = False

    def validate(self) -> "AuditConfig":
        if self.folds < 2:
            raise ImgclfError(f"--folds must be at least 2, got {self.folds}")
        if not 0 < self.dup_threshold <= 1:
            raise ImgclfError(f"--dup-threshold must be in (0, 1], got {self.dup_threshold}")
        return self


@dataclass
class AuditResult:
    out: Path
    rows: list[dict]  # audit.csv's rows, most suspicious first within each kind
    pred_probs: np.ndarray  # (N, classes), out of sample, in manifest order
    labels: np.ndarray
    paths: list[str]
    summary: dict


def audit(cfg: AuditConfig) -> AuditResult:
    cfg.validate()
    t0 = time.perf_counter()
    from .manifest import load_dataset

    ds = load_dataset(cfg.data)
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise ImgclfError("imgclf audit needs cleanlab: pip install 'imgclf[audit]'") from None
    out = prepare_out_dir(Path(cfg.out), cfg.force, "audit")
    feats, labels, paths, splits = dataset_features(ds, cfg.workers)
    t_feat = time.perf_counter() - t0
    probs = cross_fit(feats, labels, cfg.folds, cfg.seed, cfg.C_per_image)
    rows = label_issues(probs, labels, paths, splits, ds.classes)
    rows += near_duplicates(feats, labels, paths, splits, ds.classes, cfg.dup_threshold)
    rows += outliers(feats, probs, labels, paths, splits, ds.classes, cfg.outlier_z)
    write_csv(out / "audit.csv", AUDIT_COLUMNS, ([r[c] for c in AUDIT_COLUMNS] for r in rows))
    counts = {k: sum(r["kind"] == k for r in rows) for k in KINDS}
    summary = {"images": len(labels), "classes": ds.classes, "flagged": counts,
               "cross_split_duplicates": sum(r["kind"] == "duplicate" and "other split" in r["detail"] for r in rows),
               "out_of_sample_accuracy": float((probs.argmax(1) == labels).mean()),
               "seconds": {"features": round(t_feat, 1), "total": round(time.perf_counter() - t0, 1)},
               "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
               "dataset": {"root": str(Path(cfg.data).resolve()), "manifest_sha256": ds.manifest_sha256},
               "method": "cleanlab.filter.find_label_issues on cross-fitted logistic-regression probabilities over "
                         "efficientnet-lite0 ImageNet features; cosine near-duplicates; k-NN outliers"}
    write_json(out / "audit.json", summary)
    write_page(out / "audit.html", rows, summary)
    return AuditResult(out, rows, probs, labels, paths, summary)


def dataset_features(ds, workers: int):
    """(features (N, 1280) float32, labels, paths, splits) for every image of the dataset, from the
    frozen efficientnet-lite0 ImageNet backbone, cached beside the dataset like the probe's."""
    import torch

    from .cache import open_cache
    from .device import pick_device, resolve_precision
    from .models import create_model, get_spec
    from .pretrained import load_pretrained, open_features, weights_file

    name = FEATURE_MODEL
    try:
        wpath, sha = weights_file(name, None)
    except ImgclfError as e:
        raise ImgclfError(f"imgclf audit scores images with ImageNet features: {e}") from None
    spec = get_spec(name)
    device = pick_device("auto")
    precision = resolve_precision("auto", device)
    model = create_model(name, len(ds.classes))
    load_pretrained(model, wpath, spec)
    images = open_cache(ds, spec.input_size, workers=workers)
    with torch.no_grad():
        feats = open_features(ds, images, model, spec, sha, device, precision)
    order = [s for s in ("train", "val", "test") if len(feats[s])]
    x = np.concatenate([np.asarray(feats[s].images, dtype=np.float32) for s in order])
    y = np.concatenate([feats[s].labels for s in order]).astype(np.int64)
    paths = [p for s in order for p in feats[s].paths]
    splits = [s for s in order for _ in feats[s].paths]
    return x, y, paths, splits


def cross_fit(x: np.ndarray, y: np.ndarray, folds: int, seed: int, C_per_image: float) -> np.ndarray:
    """Out-of-sample probabilities: each fold scored by a model fitted on the others, with
    sklearn's C = C_per_image / (images in the fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(folds, np.bincount(y)[np.bincount(y) > 0].min()))
    if k < 2:
        raise ImgclfError("every class needs at least 2 images for a cross-fitted audit")
    probs = np.zeros((len(y), int(y.max()) + 1), dtype=np.float64)
    for fit_idx, score_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C_per_image / len(fit_idx), max_iter=2000))
        clf.fit(x[fit_idx], y[fit_idx])
        probs[np.ix_(score_idx, clf.classes_)] = clf.predict_proba(x[score_idx])
    return probs


def label_issues(probs, labels, paths, splits, classes) -> list[dict]:
    from cleanlab.filter import find_label_issues

    n_cls = len(classes)
    p = np.zeros((len(labels), n_cls)) + 1e-9
    p[:, : probs.shape[1]] += probs
    p /= p.sum(1, keepdims=True)
    flagged = find_label_issues(labels, p, filter_by="prune_by_noise_rate")
    self_conf = p[np.arange(len(labels)), labels]
    # "review": the model disagrees with the label but confident learning does not count the image
    # among the expected errors: hard or ambiguous images worth a look, kept unless a person decides
    review = (p.argmax(1) != labels) & ~flagged
    rows = [{"path": paths[i], "split": splits[i], "given": classes[labels[i]], "suggested": classes[int(p[i].argmax())],
             "score": f"{1 - self_conf[i]:.4f}", "kind": "label" if flagged[i] else "review",
             "action": "exclude" if flagged[i] else "keep", "detail": f"p({classes[labels[i]]}) = {self_conf[i]:.3f}"}
            for i in np.flatnonzero(flagged | review)]
    rows.sort(key=lambda r: (r["kind"] != "label", -float(r["score"])))
    return rows


def near_duplicates(x, labels, paths, splits, classes, threshold: float, block: int = 2048) -> list[dict]:
    """Pairs above `threshold` cosine similarity, by blocks of rows (memory: block x N floats)."""
    f = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pairs = []
    for b0 in range(0, len(f), block):
        sim = f[b0 : b0 + block] @ f.T
        for i, j in zip(*np.nonzero(sim >= threshold)):
            i = int(i) + b0
            if j > i:
                pairs.append((float(sim[i - b0, j]), i, int(j)))
    pairs.sort(key=lambda t: (splits[t[1]] == splits[t[2]], -t[0]))  # leaks across splits first
    rows = []
    for s, i, j in pairs:
        where = f"other split: {splits[i]} / {splits[j]}" if splits[i] != splits[j] else f"both {splits[i]}"
        conflict = f", labelled {classes[labels[i]]} there" if labels[i] != labels[j] else ""
        rows.append({"path": paths[j], "split": splits[j], "given": classes[labels[j]], "suggested": "",
                     "score": f"{s:.4f}", "kind": "duplicate", "action": "exclude", "other": paths[i],
                     "detail": f"near-duplicate of {paths[i]} ({where}{conflict})"})
    return rows


def outliers(x, probs, labels, paths, splits, classes, z: float) -> list[dict]:
    """Images far from every other: cleanlab's k-NN OOD score, flagged by a robust z-score."""
    from cleanlab.outlier import OutOfDistribution

    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):  # cleanlab prints "Fitting OOD estimator ..."
        score = OutOfDistribution().fit_score(features=x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    d = -np.log(np.clip(score, 1e-12, None))  # cleanlab's score is exp(-distance): back to a distance
    med = np.median(d)
    mad = np.median(np.abs(d - med)) * 1.4826 + 1e-12
    zs = (d - med) / mad
    rows = [{"path": paths[i], "split": splits[i], "given": classes[labels[i]],
             "suggested": classes[int(probs[i].argmax())], "score": f"{zs[i]:.2f}", "kind": "outlier",
             "action": "exclude",
             "detail": f"k-NN distance z = {zs[i]:.1f} (max class probability {probs[i].max():.2f})"}
            for i in np.flatnonzero(zs > z)]
    rows.sort(key=lambda r: -float(r["score"]))
    return rows


# --- the page -------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1d2330}
h2{border-bottom:1px solid #dde;margin-top:2em}.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:176px;font-size:12px;border:1px solid #dde;border-radius:6px;padding:6px;background:#fafbfc}
.card img{width:80px;height:80px;object-fit:cover;display:inline-block;border-radius:4px}
.pair img{width:80px}.muted{color:#667}.warn{color:#b00020}code{font-size:11px;word-break:break-all}"""


def _thumb(path: str, size: int = 80) -> str:
    from PIL import Image

    from .decode import read_and_decode

    try:
        a = read_and_decode(path, size)
    except Exception:  # the file moved or broke since prepare: the row stays, without a picture
        return "<span class='muted'>(unreadable)</span>"
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=85)
    return f"<img alt='' src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def write_page(path: Path, rows: list[dict], summary: dict, per_kind: int = 120) -> None:
    """Self-contained HTML (thumbnails inline, no scripts, no network): most suspicious first, by kind."""
    e = html.escape
    titles = {"label": "Probably mislabelled", "review": "Worth a look (the model disagrees; kept)",
              "duplicate": "Near-duplicates", "outlier": "Unlike any class"}
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>imgclf audit</title>"
             f"<style>{_CSS}</style></head><body><h1>imgclf audit</h1>"
             f"<p>{summary['images']} images of {len(summary['classes'])} classes; out-of-sample accuracy "
             f"{summary['out_of_sample_accuracy']:.2%}. Flagged: "
             + ", ".join(f"<a href='#{k}'>{summary['flagged'][k]} {titles[k].lower()}</a>" for k in KINDS)
             + (f"; <b class='warn'>{summary['cross_split_duplicates']} near-duplicate pairs straddle "
                "train/val/test</b>" if summary["cross_split_duplicates"] else "")
             + ". Every row is in audit.csv; act on it with <code>imgclf prepare SRC --exclude audit.csv</code>.</p>"]
    for k in KINDS:
        mine = [r for r in rows if r["kind"] == k]
        parts.append(f"<h2 id='{k}'>{titles[k]} ({len(mine)})</h2>")
        if len(mine) > per_kind:
            parts.append(f"<p class='muted'>the {per_kind} most suspicious; all {len(mine)} in audit.csv</p>")
        cards = []
        for r in mine[:per_kind]:
            pic = _thumb(r["path"])
            if k == "duplicate":
                pic += " " + _thumb(r["other"])
            label = (f"given <b>{e(r['given'])}</b>" + (f", looks like <b>{e(r['suggested'])}</b>"
                                                          if r["suggested"] and r["suggested"] != r["given"] else ""))
            cards.append(f"<div class='card{' pair' if k == 'duplicate' else ''}' data-kind='{k}'>{pic}<br>{label}"
                         f"<br><span class='muted'>{e(r['detail'])}</span><br><code>{e(Path(r['path']).name)}</code>"
                         "</div>")
        parts.append("<div class='grid'>" + "".join(cards) + "</div>" if cards else "<p class='muted'>none</p>")
    parts.append("</body></html>")
    atomic_write_text(path, "".join(parts))


def read_exclusions(path: Path | str) -> tuple[set[str], dict[str, str]]:
    """(paths to leave out, {path: new label}) from an audit.csv (or any CSV with a `path`
    column; an `action` column may say exclude or relabel, relabel taking `suggested`)."""
    from .files import read_csv

    path = Path(path)
    if not path.is_file():
        raise ImgclfError(f"--exclude {path} is not a file")
    rows = read_csv(path)
    if rows and "path" not in rows[0]:
        raise ImgclfError(f"--exclude {path} has no 'path' column")
    drop, relabel = set(), {}
    for r in rows:
        action = (r.get("action") or "exclude").strip().lower()
        if action == "relabel":
            if not r.get("suggested"):
                raise ImgclfError(f"--exclude {path}: relabel row for {r['path']} has no 'suggested' label")
            relabel[str(Path(r["path"]).absolute())] = r["suggested"]
        elif action == "exclude":
            drop.add(str(Path(r["path"]).absolute()))
        elif action not in ("keep", ""):
            raise ImgclfError(f"--exclude {path}: action must be exclude, relabel or keep, got '{action}'")
    return drop, relabel

