"""Every odd or hostile file either decodes to the right RGB image or is rejected with a reason."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgclf.decode import MAX_PIXELS, check_image, decode_image, read_and_decode
from imgclf.errors import DecodeError


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.new("RGB", (20, 10), (250, 10, 10))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_common_formats_decode_to_rgb(fmt):
    a = decode_image(encode(RGB, fmt))
    assert a.shape == (10, 20, 3) and a.dtype == np.uint8
    assert a[..., 0].mean() > 200 and a[..., 2].mean() < 60  # still red


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_convert_to_rgb(mode):
    im = RGB.convert(mode) if mode != "I;16" else Image.fromarray(np.full((10, 20), 40000, np.uint16))
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG" if mode != "1" else "BMP"
    a = decode_image(encode(im, fmt))
    assert a.shape == (10, 20, 3)
    if mode == "I;16":  # 16-bit is rescaled, not clipped to white
        assert 150 < a.mean() < 160


def test_cmyk_jpeg_keeps_colour():
    a = decode_image(encode(RGB.convert("CMYK"), "JPEG", quality=95))
    assert a[..., 0].mean() > 200 and a[..., 1].mean() < 60


def test_alpha_composited_on_white():
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(encode(im, "PNG")).min() == 255
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    assert decode_image(encode(p, "PNG", transparency=0)).min() == 255


def test_exif_orientation_applied():
    im = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    a = decode_image(encode(im, "JPEG", exif=exif))
    assert a.shape == (30, 10, 3)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    a = decode_image(buf.getvalue())
    assert a[..., 0].mean() > 200


def test_one_pixel_and_resize():
    one = decode_image(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), size=16)
    assert one.shape == (16, 16, 3)
    assert decode_image(encode(RGB, "JPEG"), size=7).shape == (7, 7, 3)


@pytest.mark.parametrize("shape, size", [((180, 180), 224), ((180, 180), 64), ((37, 90), 64), ((9, 7), 40), ((300, 500), 96)])
def test_resize_matches_torch_interpolate(shape, size, monkeypatch):
    # The fast path (ATen op writing straight into HWC, plain bilinear for upscales) must give the
    # very pixels of the public F.interpolate with antialias, and so must the fallback.
    import torch
    import torch.nn.functional as F

    from imgclf import decode

    a = np.random.default_rng(size).integers(0, 256, (*shape, 3), dtype=np.uint8)
    x = torch.from_numpy(a[None]).permute(0, 3, 1, 2)
    ref = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].permute(1, 2, 0)
    fast = decode.resize_image(a, size)
    assert fast.shape == (size, size, 3) and fast.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(fast, ref.numpy())
    monkeypatch.setattr(torch.ops.aten, "_upsample_bilinear2d_aa", None)  # no such overload: the fallback
    monkeypatch.setattr(torch.ops.aten, "upsample_bilinear2d", None)
    np.testing.assert_array_equal(decode.resize_image(a, size), ref.numpy())


def test_png_named_jpg(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(encode(RGB, "PNG"))
    assert read_and_decode(p).shape == (10, 20, 3)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, this is text not an image\n" * 10, "not an image"),
        (b"<html><body>404</body></html>", "not an image"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
    ],
)
def test_rejects_non_images(data, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_image(data)


def test_truncated_jpeg_rejected():
    big = Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(big, "JPEG")
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG claiming w x h pixels with a tiny zlib stream: a decompression bomb's header."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def test_decompression_bomb_rejected_from_header():
    for w, h in ((30000, 30000), (11000, 10000)):  # over Pillow's own limit too; over ours only
        with pytest.raises(DecodeError, match="too large"):
            decode_image(_png_header_only(w, h))
        assert w * h > MAX_PIXELS


def test_importing_imgclf_leaves_pillows_bomb_guard_on():
    import subprocess
    import sys

    code = "import PIL.Image as I; d = I.MAX_IMAGE_PIXELS; import imgclf.decode, imgclf.cli; print(I.MAX_IMAGE_PIXELS == d)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_unreadable_file(tmp_path):
    with pytest.raises(DecodeError, match="cannot read"):
        read_and_decode(tmp_path / "missing.jpg")


def _noise(w=64, h=48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


SEEDS = [
    encode(RGB, "JPEG"),
    encode(_noise(), "JPEG", quality=90),
    encode(_noise(70, 33), "JPEG", progressive=True),
    encode(_noise(), "JPEG", exif=_rotated_exif()),  # Pillow's path, width and height swapped
    encode(_noise().convert("CMYK"), "JPEG"),
    encode(_noise().convert("L"), "JPEG"),
    encode(RGB, "PNG"),
    encode(RGB.convert("P"), "GIF"),
]


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.just(0), st.integers(0, 20_000)),
)
def test_fuzz_mutated_bytes(base, edits, cut):
    # Damaged files decode to RGB or raise DecodeError, nothing else, and print no library
    # warnings at the user; prepare's check (JPEGs at 1/8 scale) accepts and rejects exactly what
    # a full decode does, with the size it shows.
    data = bytearray(base)
    for pos, val in edits:
        data[pos % len(data)] = val
    data = bytes(data[: len(data) - cut % (len(data) + 1)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            a = decode_image(data)
        except DecodeError:
            a = None
            with pytest.raises(DecodeError):
                check_image(data)
        if a is not None:
            assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8
            assert check_image(data) == (a.shape[1], a.shape[0])
    assert not caught, [str(w.message) for w in caught]


def test_permission_denied_is_a_rejection(tmp_path, monkeypatch):
    # Root reads mode-000 files anyway, so simulate what an ordinary user gets.
    p = tmp_path / "locked.jpg"
    p.write_bytes(encode(RGB, "JPEG"))
    import os

    real_open = os.open
    monkeypatch.setattr(os, "open", lambda f, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if str(f) == str(p) else real_open(f, *a, **k))
    with pytest.raises(DecodeError, match="cannot read file .Permission denied"):
        read_and_decode(p)


def test_large_and_growing_files(tmp_path, monkeypatch):
    import imgclf.decode as decode

    p = tmp_path / "big.jpg"
    p.write_bytes(encode(RGB, "JPEG") + b"\0" * 5000)  # trailing bytes after EOI: still a JPEG
    assert decode.read_file(p) == p.read_bytes()
    monkeypatch.setattr(decode, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DecodeError, match="file larger than"):
        decode.read_file(p)


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError, match="not a regular file"):
        read_and_decode(fifo)
