"""Turn image bytes into an RGB uint8 array, or reject them with a one-line reason.

This is the only place imgclf decodes pixels: show and predict call `decode_image`, prepare
`check_image` (the same path at 1/8 scale), the cache `decode_scaled` + `resize_into` (the same
path in two halves), so a file is accepted or rejected the same way everywhere and the cache
holds exactly what a direct decode gives. `check_header` is the cheap half of `check_image`
for callers that decode the file straight after (prepare building a cache in the same pass).

Policy (documented in the README):
- zero-byte, non-image, truncated or otherwise corrupt files are rejected (never half-decoded);
- anything Pillow opens is converted to RGB: grayscale, palette, CMYK, 16-bit, alpha (composited
  on white, which is what a viewer shows), first frame of animations; EXIF orientation is applied;
- images over MAX_PIXELS are rejected from their header alone, before any pixel is decoded, so a
  decompression bomb costs microseconds and no memory.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import threading
import warnings
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DecodeError

# 100 megapixels: every real photo fits, a 30000x30000 bomb (900 MP) does not.
MAX_PIXELS = 100_000_000
DECODE_TIMEOUT_S = 30.0  # a 100 MP JPEG decodes in ~1 s here
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
)
RESIZE_METHOD = "squash-bilinear-aa-torch"  # part of the cache key: change it and caches rebuild

# Pillow's own decompression-bomb guard stays as the user's process has it (imgclf never turns it
# off): its error above 2x Image.MAX_IMAGE_PIXELS becomes our one-line message, its warning below
# that is silenced by the decode's warning filter, and MAX_PIXELS decides.

_JPEG_MAGIC = b"\xff\xd8\xff"
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_EXIF_ORIENT = 0x0112


def decode_image(data: bytes, size: int | None = None) -> np.ndarray:
    """Decode `data` to an (H, W, 3) uint8 RGB array; with `size`, squash-resize to size x size.

    Raises DecodeError with a short human reason for anything that is not a whole, sane image.
    """
    arr, _ = decode_scaled(data, size)
    return resize_image(arr, size) if size else arr


def decode_scaled(data: bytes, size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """`decode_image` without its final resize: JPEGs come out DCT-downscaled toward `size` (both
    sides still >= size), other formats at full size; with the source's (width, height) as
    shown, which is what `check_image` returns. `resize_into` finishes them, many same-shaped
    images in one call (the cache's workers); `decode_image` one at a time."""
    return _decode(data, size)


def check_image(data: bytes) -> tuple[int, int]:
    """Accept or reject `data` exactly as `decode_image` would; return its (width, height) as shown.

    Decodes JPEGs at 1/8 scale: libjpeg runs its entropy decoder, where truncation and corrupt
    data show up, over the whole file at any scale; only the inverse DCT and the colour
    conversion shrink. 7,700 truncated, bit-flipped and cut copies of real PetImages and Kaggle
    files got the same verdict at 1/8 as at full scale (BENCHMARKS.md, "Ingest"), for 44% of
    the time on 180 px PetImages and 60% on the Kaggle originals.
    """
    return _decode(data, 1)[1]


def check_header(data: bytes) -> tuple[int, int]:
    """Reject from the header alone what `check_image` would reject from it (empty, not an image,
    no pixels, over MAX_PIXELS); return the stored (width, height), before EXIF orientation.

    ~3 us for a JPEG against ~60-120 for `check_image`'s 1/8-scale decode. A file it passes may
    still be truncated or corrupt: only for callers that decode every file next anyway."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if data[:3] == _JPEG_MAGIC:
        import simplejpeg

        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            if 0 < h * w <= MAX_PIXELS:
                return w, h
        except ValueError:
            pass  # Pillow's judgement, as in _decode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open_pillow(data) as im:
            return im.size


def _decode(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """(pixels DCT-scaled toward `size`, the source's (width, height) as shown, EXIF applied)."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    with _time_limit(DECODE_TIMEOUT_S):
        if data[:3] == _JPEG_MAGIC:
            got = _decode_jpeg_fast(data, size)
            if got is not None:
                return got
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's EXIF/ICC chatter; real failures raise
            return _decode_pillow(data, size)


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout


def _alarm_usable() -> bool:
    """SIGALRM exists (POSIX) and we are in the main thread, the only one Python delivers it to."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


class _time_limit:
    """Turn a decoder stuck on a pathological file into a rejection instead of a hang.

    Uses SIGALRM, so only in a main thread on POSIX (where prepare's workers and the CLI run);
    elsewhere it is a no-op and the size limits above are the only guard. Inside
    `timeout_handler()` the handler is already ours and only the timer is armed.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.armed = _alarm_usable()
        if self.armed:
            self.old = signal.getsignal(signal.SIGALRM)
            if self.old is not _on_alarm:
                signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, typ, exc, tb) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self.old is not _on_alarm:
                signal.signal(signal.SIGALRM, self.old)
        if typ is _Timeout:
            raise DecodeError(f"decoding took longer than {self.seconds:.0f} s; pathological file") from None


@contextmanager
def timeout_handler():
    """Keep the decode-timeout handler installed across many decodes (a cache worker's chunk):
    installing and restoring it around every image cost ~4.5 us of a 64 px image's ~130."""
    if not _alarm_usable():
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, old)


def _decode_jpeg_fast(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """libjpeg-turbo via simplejpeg for clean JPEGs, ~5x Pillow; None hands the file to Pillow.

    strict=True turns every libjpeg warning (premature end, extraneous bytes) into a fallback,
    so odd files get Pillow's judgement and the fast path only ever sees clean ones.
    """
    import simplejpeg

    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data, strict=True)
        if colorspace not in ("YCbCr", "Gray") or h * w > MAX_PIXELS:
            return None
        if _has_exif(data) and _exif_orientation(data) != 1:
            return None
        kw = _dct_scale(h, w, size) if size else {}
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **kw), (w, h)
    except ValueError:
        return None


def _dct_scale(h: int, w: int, size: int) -> dict:
    """DCT-domain downscaling by 1/2, 1/4 or 1/8, the largest that keeps both sides >= size.

    Only powers of two: libjpeg-turbo's other M/8 factors decode slower than no scaling at all
    (measured: 5/8 on the Kaggle originals cost 1.4x a full decode).
    """
    for k in (8, 4, 2):
        if -(-h // k) >= size and -(-w // k) >= size:
            return {"min_height": -(-h // k), "min_width": -(-w // k)}
    return {}


def _has_exif(data: bytes) -> bool:
    return data.find(b"Exif\x00\x00", 0, 65536) >= 0  # find with bounds: no copy of the first 64 KiB


def _exif_orientation(data: bytes) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Corrupt EXIF data" and such (opening reads EXIF): not the user's concern
        try:
            with Image.open(io.BytesIO(data)) as im:
                return int(im.getexif().get(_EXIF_ORIENT, 1))
        except Exception:  # unreadable EXIF: Pillow's path decides
            return -1


def _open_pillow(data: bytes) -> Image.Image:
    """Pillow's lazy open (header only), with its sizes checked against the limits."""
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise DecodeError(f"image too large (over Pillow's limit and the {MAX_PIXELS:,} px one; "
                          "decompression bomb?)") from None
    except Exception as e:  # malformed headers raise all sorts
        raise DecodeError(f"corrupt or truncated image header ({_short(e)})") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise DecodeError(f"image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise DecodeError(f"image too large ({w}x{h} px > {MAX_PIXELS:,} px limit; decompression bomb?)")
    return im


def _decode_pillow(data: bytes, size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    im = _open_pillow(data)
    w, h = im.size
    try:
        if size and im.format == "JPEG":
            im.draft("RGB", (size, size))  # DCT-domain downscale, stays >= size
        im.load()  # raises on truncated data: LOAD_TRUNCATED_IMAGES stays False
        im, swapped = _exif_transpose(im)
        im = _to_rgb(im)
        arr = np.asarray(im, dtype=np.uint8)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("image too large to decode in memory") from None
    except Exception as e:
        raise DecodeError(f"corrupt or truncated image ({_short(e)})") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DecodeError(f"unexpected pixel layout {arr.shape}")
    return arr, ((h, w) if swapped else (w, h))


def _exif_transpose(im: Image.Image) -> tuple[Image.Image, bool]:
    """The image as a viewer shows it, and whether that swapped width and height (orientations
    5-8, the quarter turns)."""
    try:
        swaps = im.getexif().get(_EXIF_ORIENT, 1) in (5, 6, 7, 8)
        return ImageOps.exif_transpose(im), swaps
    except Exception:  # broken EXIF must not cost an otherwise good image
        return im, False


def _to_rgb(im: Image.Image) -> Image.Image:
    """Every Pillow mode to 8-bit RGB, preserving what a person would see."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit grayscale: Pillow's convert('L') clips at 255; rescale the range instead.
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(a.max()), 1.0)
        if mode == "F":
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / max(hi - lo, 1e-12)
        else:
            a = a / hi
        g = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode in ("RGBa", "La"):
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")


def to_rgb_array(image) -> np.ndarray:
    """An already decoded image (PIL image, or (H, W) / (H, W, 3|4) uint8 array) as an (H, W, 3)
    uint8 RGB array, under the same policy as a file: EXIF orientation applied, alpha over white,
    the pixel limit enforced. DecodeError otherwise."""
    if isinstance(image, Image.Image):
        w, h = image.size
        if w * h > MAX_PIXELS:
            raise DecodeError(f"image too large ({w}x{h} px > {MAX_PIXELS:,} px limit)")
        if w <= 0 or h <= 0:
            raise DecodeError(f"image has no pixels ({w}x{h})")
        im, _ = _exif_transpose(image)
        return np.asarray(_to_rgb(im), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DecodeError(f"expected a uint8 array of pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DecodeError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise DecodeError(f"image too large ({arr.shape[1]}x{arr.shape[0]} px > {MAX_PIXELS:,} px limit)")
    if arr.shape[2] == 4:
        return np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA")), dtype=np.uint8)
    return arr


def resize_image(arr: np.ndarray, size: int) -> np.ndarray:
    """One decoded (H, W, 3) uint8 image squash-resized to size x size, through `resize_into`."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return np.ascontiguousarray(arr)
    out = np.empty((1, size, size, 3), dtype=np.uint8)
    resize_into(arr[None], size, out)
    return out[0]


def resize_into(batch: np.ndarray, size: int, out: np.ndarray) -> None:
    """Squash (N, H, W, 3) uint8 images into `out`, (N, size, size, 3) C-contiguous: aspect not
    kept (as the tutorial and Keras do), antialiased bilinear.

    torch's uint8 channels-last kernel: same filter as Pillow's BILINEAR (within +-1 level),
    2-6x faster. Details that each halve its cost (BENCHMARKS.md, "Ingest"):
    - the result is written straight into HWC rows: F.interpolate returns NCHW, and turning that
      back into HWC rows was a transposing copy that cost more than the resize (180 -> 224 px:
      62 us with `out=`, 242 us without);
    - the antialias filter only differs from plain bilinear when shrinking, so an upscale takes
      the plain kernel: the same pixels (tests/test_decode.py checks both against F.interpolate);
    - one call for N images: each call computes the filter weights afresh (~11 us), so a batch
      of 64 90 px images resizes to 64 px at 14 us each against 33 us one by one, same pixels.
    """
    h, w = batch.shape[1:3]
    if h == size and w == size:
        out[...] = batch
        return
    import torch

    batch = np.ascontiguousarray(batch)
    if not batch.flags.writeable:  # Pillow's arrays are read-only, and torch warns though it only reads
        batch = batch.copy()
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    y = torch.from_numpy(out).permute(0, 3, 1, 2)
    shrink = h > size or w > size
    try:
        op = torch.ops.aten._upsample_bilinear2d_aa if shrink else torch.ops.aten.upsample_bilinear2d
        op.out(x, [size, size], False, None, None, out=y)
    except (AttributeError, RuntimeError, TypeError):  # an ATen without these overloads: the public path
        y.copy_(torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=shrink,
                                                align_corners=False))


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


def read_file(path) -> bytes:
    """A regular file's bytes, or DecodeError: FIFOs and devices would block or never end.

    One open/fstat/read: O_NONBLOCK keeps a FIFO from blocking the open, and the read asks for
    the file's size + 1 bytes. (`f.read(MAX_FILE_BYTES + 1)` had Python allocate, then shrink, a
    512 MiB buffer per file: 34 us of a 180 px JPEG's ~100 us decode.)
    """
    limit = MAX_FILE_BYTES
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise DecodeError(f"cannot read file ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not a regular file")
        if st.st_size > limit:
            raise DecodeError(f"file larger than {limit >> 20} MiB; not a photo imgclf will decode")
        parts, got, want = [], 0, st.st_size + 1  # +1: a file that grew since it was listed is read whole
        while got <= limit:
            b = os.read(fd, min(want, limit + 1 - got))
            if not b:
                break
            parts.append(b)
            got += len(b)
            want = 1 << 20
        if got > limit:  # grew past the limit while being read
            raise DecodeError(f"file larger than {limit >> 20} MiB; not a photo imgclf will decode")
        return parts[0] if len(parts) == 1 else b"".join(parts)
    except OSError as e:
        raise DecodeError(f"cannot read file ({e.strerror or e})") from None
    finally:
        os.close(fd)


def read_and_decode(path, size: int | None = None) -> np.ndarray:
    """Read a file and decode it; unreadable files become DecodeError too."""
    return decode_image(read_file(path), size)


MAX_FILE_BYTES = 512 << 20
