"""Classify images with a model from `imgclf export`: onnxruntime + numpy + Pillow, no torch, no imgclf.

This file is copied beside every exported model (predict_onnx.py), so it imports nothing from
imgclf and runs wherever those three packages install:

    pip install onnxruntime numpy pillow
    python predict_onnx.py model.onnx cat.jpg dog.png        # prints path, class, probability

or from Python:

    clf = OnnxClassifier("export/model.onnx")
    clf.predict(["cat.jpg"])          # [{"path": ..., "class": "Cat", "prob": 0.98, ...}]

Preprocessing follows the sidecar (model.json): decode to RGB with EXIF orientation and alpha
over white, JPEGs DCT-downscaled by Pillow's draft() exactly as imgclf's decoder chooses the
scale, then squash-resize with Pillow's bilinear filter. imgclf resizes with torch's kernel of the
same filter, which rounds differently by at most one level in a few pixels: BENCHMARKS.md
("Export parity") gives the measured top-1 agreement of this path with imgclf's.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # imgclf's decompression-bomb limit


def decode(image, size: int) -> np.ndarray:
    """A path, bytes or PIL image -> (size, size, 3) uint8 RGB, the way imgclf decodes files."""
    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        try:
            im = Image.open(io.BytesIO(image))
        except UnidentifiedImageError:
            raise ValueError("not an image (unrecognised format)") from None
        if im.size[0] * im.size[1] > MAX_PIXELS:
            raise ValueError(f"image too large ({im.size[0]}x{im.size[1]} px)")
        if im.format == "JPEG":
            im.draft("RGB", (size, size))  # DCT-domain downscale, both sides stay >= size
        im.load()
    elif isinstance(image, Image.Image):
        im = image
    else:
        raise TypeError(f"expected a path, bytes or a PIL image, got {type(image).__name__}")
    im = ImageOps.exif_transpose(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    im = im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


class OnnxClassifier:
    """An exported model and its sidecar; `decode` may be replaced (imgclf serve passes its own)."""

    def __init__(self, model_path, decode_fn=None, threads: int = 0):
        import onnxruntime as ort

        path = Path(model_path)
        if path.is_dir():
            path = path / "model.onnx"
        self.info = json.loads((path.parent / "model.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0: onnxruntime's default, one per core
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.classes = list(self.info["classes"])
        self.names = [i["name"] for i in self.info["inputs"]]
        self.sizes = [int(i["size"]) for i in self.info["inputs"]]
        self.input_size = self.sizes[0]
        self._decode = decode_fn or decode
        self.batch_size = 64

    def decode(self, image) -> list[np.ndarray]:
        return [self._decode(image, s) for s in self.sizes]

    def predict_views(self, views) -> np.ndarray:
        return self.session.run(["probs"], {n: np.ascontiguousarray(v) for n, v in zip(self.names, views)})[0]

    def predict(self, images, top_k: int = 1) -> list[dict]:
        """One dict per image: path, class, prob, top_k [(class, prob)], probs, error."""
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk, ok = images[i : i + self.batch_size], []
            rows = []
            for img in chunk:
                try:
                    ok.append(self.decode(img))
                    rows.append(None)
                except Exception as e:  # a bad image gets its own error line
                    rows.append({"path": str(img), "class": "", "prob": None, "top_k": [], "probs": {},
                                 "error": str(e).splitlines()[0][:160] or type(e).__name__})
            probs = iter(self.predict_views([np.stack(v) for v in zip(*ok)]) if ok else [])
            for img, r in zip(chunk, rows):
                out.append(r or self.describe(next(probs), str(img), top_k))
        return out

    def describe(self, p: np.ndarray, name: str, top_k: int = 1) -> dict:
        return describe(p, self.classes, name, top_k)


def describe(p: np.ndarray, classes: list[str], name: str, top_k: int = 1) -> dict:
    """One image's answer, as imgclf's Classifier gives it too: best class first."""
    order = np.argsort(-p, kind="stable")[: max(1, top_k)]
    return {"path": name, "class": classes[order[0]], "prob": float(p[order[0]]),
            "top_k": [(classes[k], float(p[k])) for k in order],
            "probs": {c: float(v) for c, v in zip(classes, p)}, "error": ""}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python predict_onnx.py MODEL.onnx IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    clf = OnnxClassifier(args[0])
    res = clf.predict(args[1:])
    for r in res:
        print(f"{r['path']}\t{r['class'] or '-'}\t{'' if r['prob'] is None else format(r['prob'], '.4f')}\t{r['error']}")
    return 0 if any(not r["error"] for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
