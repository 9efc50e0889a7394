"""Stage 7: a trained run as an object to embed: load it once, classify images in batches.

    clf = Classifier("runs/pets")
    clf.predict(["cat.jpg", pil_image, uint8_array])   # one dict per image, best class first

Preprocessing is exactly the run's: each image is decoded by decode.py, squash-resized to the
model's input size and to every extra test-time size the run recorded (views.view_sizes), and
the views are averaged as in evaluation (views.tta_logits). On a run's own test files the
probabilities are those of its predictions.csv (tests/test_classifier.py checks it).

Inputs, and where their pixels come from:
- a path or bytes: the file's bytes through `decode_image`, as prepare and the cache do (JPEGs are
  DCT-downscaled first: the same pixels as the run's cache);
- a PIL image or an (H, W, 3) / (H, W) uint8 array: already decoded, so only the resize applies.
  A JPEG handed over as a PIL image is decoded at full size first and can differ from the file's
  pixels by a level or two: pass the path when the exact evaluation pixels matter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from .decode import decode_image, read_file, resize_image, to_rgb_array
from .device import autocast, pick_device, resolve_precision
from .errors import DecodeError, ImgclfError
from .views import tta_logits, view_sizes
from .load import input_fn
from .onnx_predict import describe  # the answer's format, shared with the torch-free runner
from .runfolder import load_model, read_config

VIEWS = ("all", "mirror", "none")
ImageInput = Union[str, Path, bytes, np.ndarray, "PIL.Image.Image"]  # noqa: F821


class Classifier:
    """A run folder's model with its preprocessing; `predict` is safe to call many times.

    precision: None takes the run's own (bf16 where the CPU has fast bf16, as in training); "fp32"
    is the reference an exported model is checked against. views: "all" the run's test-time views
    (what its metrics were scored with), "mirror" the image at the input size and its mirror,
    "none" the image alone (6x fewer forward passes for fastcnn, 0.9 points less accurate on the
    PetImages test split: BENCHMARKS.md, "Export parity")."""

    def __init__(self, run: Path | str, device: str = "auto", precision: str | None = None, batch_size: int = 64,
                 views: str = "all"):
        if views not in VIEWS:
            raise ImgclfError(f"views must be one of {', '.join(VIEWS)}, got '{views}'")
        self.run = Path(run)
        self.device = pick_device(device)
        model, self.meta = load_model(self.run, self.device)
        cfg = read_config(self.run)
        self.precision = resolve_precision(precision or cfg.get("precision", "auto"), self.device)
        channels_last = cfg.get("channels_last", True)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt).eval()
        self.classes: list[str] = list(self.meta["classes"])
        self.input_size: int = int(self.meta["input_size"])
        decoded, self.resized_sizes = view_sizes(self.meta) if views == "all" else ([], [])
        self.sizes: list[int] = [self.input_size, *decoded]  # every size an image is decoded at
        self.mirror: bool = bool(self.meta.get("tta", False)) if views == "all" else views == "mirror"
        self.views_name = views
        self.batch_size = batch_size
        self._to_input = input_fn(self.device, self.meta["mean"], self.meta["std"], channels_last)

    def decode(self, image: ImageInput) -> list[np.ndarray]:
        """The image as (size, size, 3) uint8 arrays, one per decoded size; DecodeError if unreadable."""
        if isinstance(image, (str, Path)):
            image = read_file(image)
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            return [decode_image(data, s) for s in self.sizes]
        arr = to_rgb_array(image)
        return [resize_image(arr, s) for s in self.sizes]

    @torch.no_grad()
    def predict_views(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, classes) for stacked views: one (N, size, size, 3) uint8 array per size."""
        x, *more = (self._to_input(torch.from_numpy(np.ascontiguousarray(v))) for v in views)
        with autocast(self.device, self.precision):
            logits = tta_logits(self.model, x, self.mirror, self.resized_sizes, more)
        return logits.float().softmax(1).cpu().numpy()

    def predict_proba(self, images: Iterable[ImageInput]) -> np.ndarray:
        """Probabilities (N, classes); any unreadable image raises DecodeError naming it."""
        rows, out = [], []
        for img in images:
            try:
                rows.append(self.decode(img))
            except DecodeError as e:
                raise DecodeError(f"{_name(img)}: {e}") from None
            if len(rows) == self.batch_size:
                out.append(self.predict_views([np.stack(v) for v in zip(*rows)]))
                rows = []
        if rows:
            out.append(self.predict_views([np.stack(v) for v in zip(*rows)]))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, images: Iterable[ImageInput], top_k: int = 1, on_batch=None) -> list[dict]:
        """One dict per image, in order: path (or "<array>"), class, prob, top_k [(class, prob)],
        probs per class, and error ("" when it was read). A bad image gets its own error and never
        stops the others. `on_batch(n)` is called after every n images (progress bars)."""
        images = list(images)
        results: list[dict] = [{} for _ in images]
        pending: list[tuple[int, list[np.ndarray]]] = []

        def flush():
            if not pending:
                return
            probs = self.predict_views([np.stack(v) for v in zip(*(a for _, a in pending))])
            for (i, _), p in zip(pending, probs):
                results[i] = self.describe(p, _name(images[i]), top_k)
            if on_batch:
                on_batch(len(pending))
            pending.clear()

        for i, img in enumerate(images):
            try:
                pending.append((i, self.decode(img)))
            except DecodeError as e:
                results[i] = {"path": _name(img), "class": "", "prob": None, "top_k": [], "probs": {},
                              "error": str(e)}
                if on_batch:
                    on_batch(1)
            if len(pending) >= self.batch_size:
                flush()
        flush()
        return results

    def describe(self, p: np.ndarray, name: str, top_k: int = 1) -> dict:
        return describe(p, self.classes, name, top_k)


def _name(img) -> str:
    return str(img) if isinstance(img, (str, Path)) else f"<{type(img).__name__}>"


def check_top_k(top_k: int, classes: list[str]) -> int:
    if top_k < 1:
        raise ImgclfError(f"--top-k must be at least 1, got {top_k}")
    return min(top_k, len(classes))
