"""Stage 8: a trained run as a portable model (ONNX, or torch.export's .pt2), proven equal to PyTorch.

Exported classifiers lose accuracy silently when the code around them preprocesses differently,
so the graph keeps as much of the preprocessing as a graph can hold and the rest is written down:

- inside the graph: uint8 NHWC pixels -> float, the model's mean/std, the forward pass, the
  test-time views that need no new decode (the mirror), their average, softmax;
- outside it (in the sidecar JSON and the model's metadata): decode to RGB with EXIF orientation,
  squash-resize to each input's size. With views "all" the graph has one input per size the run
  decodes an image at (fastcnn: 3), so the exported model scores exactly what the run scored.

`export` verifies by default: the run's whole test split, decoded by imgclf's own decode path, goes
through the exported model and through the PyTorch model in fp32, and the export fails when more
than 0.1% of top-1 answers flip or accuracy moves by more than 0.1 points.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import __version__
from .classifier import VIEWS, Classifier
from .errors import ImgclfError
from .views import tta_logits
from .files import atomic_write_bytes, prepare_out_dir, read_json, write_json

FORMATS = ("onnx", "pt2")
MODEL_FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}
SIDECAR = "model.json"
MAX_FLIP_RATE = 0.001  # top-1 answers that may differ from PyTorch fp32: 1 in 1,000
MAX_ACCURACY_DELTA = 0.001  # accuracy points (as a fraction) the export may move
DEFAULT_OPSET = 18  # the oldest opset torch's dynamo exporter writes natively (older ones are converted)
# How the pixels outside the graph are made; written beside the model for whoever feeds it.
PREPROCESSING = {
    "decode": "RGB, 8 bits: grayscale, palette, CMYK and 16-bit converted; alpha composited over white; "
              "EXIF orientation applied",
    "jpeg_dct_scaling": "JPEGs are decoded at the largest of 1/2, 1/4, 1/8 scale that keeps both sides >= the "
                        "input's size (libjpeg scaling; Pillow's Image.draft('RGB', (size, size)) does the same)",
    "resize": "squash to size x size (aspect ratio not kept), bilinear with antialiasing when shrinking "
              "(Pillow's Image.resize(..., Image.BILINEAR) is within 1 level of it)",
    "layout": "uint8, (batch, size, size, 3), RGB channel order",
    "normalisation": "inside the graph",
}


class ExportGraph(nn.Module):
    """uint8 NHWC images (one tensor per decoded size) -> class probabilities, the run's way."""

    def __init__(self, model: nn.Module, mean, std, mirror: bool, resized_sizes: list[int]):
        super().__init__()
        self.model, self.mirror, self.resized_sizes = model, mirror, list(resized_sizes)
        self.register_buffer("scale", torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1))

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        x, *more = (im.permute(0, 3, 1, 2).float() * self.scale + self.shift for im in images)
        return tta_logits(self.model, x, self.mirror, self.resized_sizes, more).softmax(1)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    verification: dict | None


def export(run: Path | str, out: Path | str | None = None, fmt: str = "onnx", opset: int = DEFAULT_OPSET,
           dynamic_batch: bool = True, views: str = "all", verify: bool = True, force: bool = False,
           batch_size: int = 64) -> ExportResult:
    """Write RUN/export (or `out`): the model file, its sidecar JSON and, for ONNX, predict_onnx.py (the
    torch-free way to use it). Verified against PyTorch fp32 on the run's test split unless `verify` is off."""
    if fmt not in FORMATS:
        raise ImgclfError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if views not in VIEWS:
        raise ImgclfError(f"--views must be one of {', '.join(VIEWS)}, got '{views}'")
    run = Path(run)
    clf = Classifier(run, device="cpu", precision="fp32", views=views)
    out = prepare_out_dir(Path(out) if out else run / "export", force, "export")
    graph = ExportGraph(clf.model.float().to(memory_format=torch.contiguous_format), clf.meta["mean"],
                        clf.meta["std"], clf.mirror, clf.resized_sizes).eval()
    names = input_names(clf.sizes)
    examples = tuple(torch.zeros(2 if dynamic_batch else 1, s, s, 3, dtype=torch.uint8) for s in clf.sizes)
    path = out / MODEL_FILES[fmt]
    info = {
        "format": fmt, "imgclf_version": __version__, "torch_version": torch.__version__,
        "model": clf.meta["model"], "classes": clf.classes,
        "inputs": [{"name": n, "size": s, "dtype": "uint8", "shape": ["batch" if dynamic_batch else 1, s, s, 3]}
                   for n, s in zip(names, clf.sizes)],
        "output": {"name": "probs", "shape": ["batch", len(clf.classes)],
                   "meaning": "class probabilities (softmax), averaged over the test-time views"},
        "views": views, "mirror": clf.mirror, "preprocessing": PREPROCESSING,
        "source": {"run": str(run.resolve()), "test_accuracy": _run_accuracy(run)},
    }
    if fmt == "onnx":
        info["opset"] = opset
        _export_onnx(graph, examples, names, path, opset, dynamic_batch, info)
        from . import onnx_predict

        shutil.copyfile(onnx_predict.__file__, out / "predict_onnx.py")  # the torch-free path, beside the model
    else:
        _export_pt2(graph, examples, path, dynamic_batch)
    sidecar = out / SIDECAR
    write_json(sidecar, info)
    result = ExportResult(path, sidecar, None)
    if verify:
        result.verification = verify_export(clf, path, batch_size=batch_size)
        write_json(sidecar, {**info, "verification": result.verification})
        if not result.verification["passed"]:
            v = result.verification
            raise ImgclfError(
                f"{path} does not reproduce the run: {v['flips']} of {v['n']} top-1 answers differ from PyTorch "
                f"fp32 (limit {MAX_FLIP_RATE:.1%}), accuracy {v['accuracy_export']:.4f} vs {v['accuracy_reference']:.4f}"
                f" (limit {MAX_ACCURACY_DELTA * 100:.1f} points); do not ship it (details in {sidecar})")
    return result


def input_names(sizes: list[int]) -> list[str]:
    """'image' at the model's input size, then 'image_<size>' for each further decoded size."""
    return ["image", *(f"image_{s}" for s in sizes[1:])]


def _export_onnx(graph, examples, names, path: Path, opset: int, dynamic_batch: bool, info: dict) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = {"images": tuple({0: batch} for _ in examples)} if dynamic_batch else None  # forward(*images)
    tmp = path.with_name(f".{path.name}.tmp")
    with _quiet_exporter():
        try:
            torch.onnx.export(graph, examples, str(tmp), dynamo=True, dynamic_shapes=shapes, input_names=names,
                              output_names=["probs"], opset_version=opset, external_data=False, verbose=False)
        except Exception as e:  # the exporter's failures are long; keep the first line
            tmp.unlink(missing_ok=True)
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip().splitlines()[0])[:200]
            raise ImgclfError(f"ONNX export failed at opset {opset}: {first} (IMGCLF_DEBUG=1 for details)") from e
    model = onnx.load(str(tmp))
    tmp.unlink()
    onnx.helper.set_model_props(model, {"imgclf": json.dumps(info), "classes": json.dumps(info["classes"])})
    model.doc_string = f"imgclf {info['model']} classifier: {', '.join(info['classes'][:20])}"
    data = model.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    atomic_write_bytes(path, data)


def _export_pt2(graph, examples, path: Path, dynamic_batch: bool) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    shapes = {"images": tuple({0: batch} for _ in examples)} if dynamic_batch else None
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export.save wants the .pt2 ending
    with _quiet_exporter():
        ep = torch.export.export(graph, examples, dynamic_shapes=shapes)
    torch.export.save(ep, str(tmp))
    tmp.replace(path)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporters print progress lines and torchvision notices; the CLI has its own output."""
    loggers = {n: logging.getLogger(n) for n in ("torch", "onnxscript", "onnx_ir")}
    levels = {n: lg.level for n, lg in loggers.items()}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for lg in loggers.values():
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for n, lg in loggers.items():
            lg.setLevel(levels[n])


def load_runner(path: Path):
    """f(list of uint8 arrays, one per input) -> probabilities, for an exported file; a model exported
    with --fixed-batch is fed one image at a time."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        fixed = sess.get_inputs()[0].shape[0] == 1
        run = lambda views: sess.run(["probs"], dict(zip(names, views)))[0]  # noqa: E731
    else:
        module = torch.export.load(str(path)).module()
        fixed = False
        run = lambda views: module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in views)).detach().numpy()  # noqa: E731
    if not fixed:
        return run
    return lambda views: np.concatenate([run([v[i : i + 1] for v in views]) for i in range(len(views[0]))])


@dataclass
class Verification:
    n: int
    flips: int
    flip_rate: float
    max_prob_diff: float
    accuracy_export: float
    accuracy_torch_fp32: float
    accuracy_reference: float
    reference: str
    accuracy_run: float | None
    run_precision: str
    unreadable: int
    passed: bool


def verify_export(clf: Classifier, path: Path, batch_size: int = 64) -> dict:
    """Score the run's test split with the exported model and with PyTorch fp32, decoded once by
    imgclf's decode path, and compare. The accuracy reference is metrics.json's when the run was
    scored in fp32 with the same views, else PyTorch fp32's (bf16 training runs round differently:
    BENCHMARKS.md, "Export parity")."""
    from .manifest import load_dataset
    from .progress import make_progress
    from .runfolder import read_config

    cfg = read_config(clf.run)
    root = Path(cfg.get("dataset", {}).get("root", ""))
    if not (root / "manifest.csv").is_file():
        raise ImgclfError(f"cannot verify: the run's dataset {root} is gone; pass --no-verify, or move it back")
    ds = load_dataset(root)
    if ds.classes != clf.classes:
        raise ImgclfError(f"cannot verify: {root} has classes {ds.classes}, the run {clf.classes}")
    rows = ds.split_rows("test")
    if not rows:
        raise ImgclfError(f"cannot verify: {root} has no test split; pass --no-verify")
    runner = load_runner(path)
    labels, p_torch, p_export, unreadable = [], [], [], 0
    index = {c: i for i, c in enumerate(ds.classes)}
    with make_progress("img") as bar:
        task = bar.add_task(f"verify {path.name}", total=len(rows))
        for b0 in range(0, len(rows), batch_size):
            batch, ys = [], []
            for r in rows[b0 : b0 + batch_size]:
                try:
                    batch.append(clf.decode(r["path"]))
                    ys.append(index[r["class"]])
                except Exception:  # a test file changed since prepare: counted, not fatal
                    unreadable += 1
            if batch:
                views = [np.stack(v) for v in zip(*batch)]
                p_torch.append(clf.predict_views(views))
                p_export.append(np.asarray(runner(views), dtype=np.float32))
                labels += ys
            bar.advance(task, len(rows[b0 : b0 + batch_size]))
    y = np.array(labels)
    pt, pe = np.concatenate(p_torch), np.concatenate(p_export)
    flips = int((pt.argmax(1) != pe.argmax(1)).sum())
    acc_export, acc_torch = float((pe.argmax(1) == y).mean()), float((pt.argmax(1) == y).mean())
    run_acc = _run_accuracy(clf.run)
    precision = cfg.get("precision_resolved", cfg.get("precision", "fp32"))
    same_scoring = run_acc is not None and precision == "fp32" and clf.views_name == "all" and not unreadable
    reference, ref_name = (run_acc, "metrics.json") if same_scoring else (acc_torch, "pytorch-fp32")
    v = Verification(
        n=len(y), flips=flips, flip_rate=flips / max(len(y), 1), max_prob_diff=float(np.abs(pt - pe).max()),
        accuracy_export=acc_export, accuracy_torch_fp32=acc_torch, accuracy_reference=reference, reference=ref_name,
        accuracy_run=run_acc, run_precision=precision, unreadable=unreadable, passed=False)
    v.passed = v.flip_rate <= MAX_FLIP_RATE and abs(acc_export - reference) <= MAX_ACCURACY_DELTA + 1e-12
    return asdict(v)


def _run_accuracy(run: Path) -> float | None:
    p = Path(run) / "metrics.json"
    if not p.is_file():
        return None
    acc = read_json(p).get("accuracy")
    return None if acc is None or math.isnan(acc) else float(acc)
