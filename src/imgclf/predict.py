"""Stage 7: classify new image files with a trained run. Bad files get their own line; the rest run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .decode import IMAGE_EXTENSIONS, decode_image, read_file
from .device import autocast, pick_device, resolve_precision
from .errors import DecodeError, ImgclfError
from .evaluate import tta_logits, view_sizes
from .load import input_fn
from .runfolder import load_model, read_config


def expand_inputs(inputs: list[Path | str]) -> list[Path]:
    """Files as given; folders walked for image files (hidden ones skipped), in sorted order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for dirpath, dirnames, files in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [Path(dirpath) / f for f in sorted(files)
                        if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        else:
            out.append(p)  # missing or odd files are reported per line, not fatal
    return out


@torch.no_grad()
def predict(run: Path | str, inputs: list[Path | str], batch_size: int = 64, device: str = "auto") -> list[dict]:
    """One dict per file: path, class, prob (of that class), probs per class, or error."""
    run = Path(run)
    dev = pick_device(device)
    model, meta = load_model(run, dev)
    cfg = read_config(run)
    precision = resolve_precision(cfg.get("precision", "auto"), dev)
    channels_last = cfg.get("channels_last", True)
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    to_input = input_fn(dev, meta["mean"], meta["std"], channels_last)
    classes, size = meta["classes"], meta["input_size"]
    decoded, resized = view_sizes(meta)  # each file is decoded at input_size and at the `decoded` sizes
    paths = expand_inputs(inputs)
    if not paths:
        raise ImgclfError("no image files found in the given paths")
    results: list[dict] = [{} for _ in paths]
    pending: list[tuple[int, list[np.ndarray]]] = []  # (index, the file's image at each size)

    def flush():
        if not pending:
            return
        x, *more = (to_input(torch.from_numpy(np.stack(v))) for v in zip(*(a for _, a in pending)))
        with autocast(dev, precision):
            logits = tta_logits(model, x, meta.get("tta", False), resized, more)
            probs = logits.softmax(1).cpu().numpy()
        for (i, _), p in zip(pending, probs):
            k = int(p.argmax())
            results[i] = {"path": str(paths[i]), "class": classes[k], "prob": float(p[k]),
                          "probs": {c: float(v) for c, v in zip(classes, p)}, "error": ""}
        pending.clear()

    for i, p in enumerate(paths):
        try:
            data = read_file(p)
            pending.append((i, [decode_image(data, s) for s in (size, *decoded)]))
        except DecodeError as e:
            results[i] = {"path": str(p), "class": "", "prob": None, "probs": {}, "error": str(e)}
        if len(pending) >= batch_size:
            flush()
    flush()
    return results
