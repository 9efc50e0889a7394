"""Pick the device and precision, and describe the environment for config.json."""

from __future__ import annotations

import functools
import os
import platform

import torch

from .errors import ImgclfError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu. A forced device that is missing is a clear error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ImgclfError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got '{name}'")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ImgclfError(f"--device {name} requested but this torch build sees no CUDA GPU; use --device cpu")
    if name == "mps" and not has_mps:
        raise ImgclfError("--device mps requested but MPS is not available; use --device cpu")
    return torch.device(name)


@functools.cache  # a fact of the hardware: asked on every Muon step (muon.ns_dtype)
def cpu_has_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ImgclfError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_allocator_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed memory instead of handing it back to the kernel.

    PyTorch's CPU tensors come straight from malloc, and glibc serves every block over 32 MiB
    (at most) with a fresh mmap, returned with munmap on free. A training step frees and
    reallocates its activations every step, so each step page-faulted hundreds of MiB of new,
    kernel-zeroed pages: about half of seed-cnn's step at 224 px on this machine (703 -> 1,558
    img/s at batch 100 with this on; fastcnn-s at 160 px 155 -> 221). Serving all blocks from
    the heap and never trimming it keeps those pages mapped. The cost: the process keeps its
    peak memory until it exits, which a training run does anyway. Linux/glibc only; set
    IMGCLF_MALLOC=system to leave malloc alone. Returns whether it is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if os.environ.get("IMGCLF_MALLOC", "keep") != "system" and platform.system() == "Linux":
            try:
                import ctypes

                libc = ctypes.CDLL("libc.so.6")
                _allocator_tuned = bool(
                    libc.mallopt(_M_MMAP_MAX, 0)  # no mmap per large block: the heap serves it
                    and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # never give the heap's top back
                    and libc.mallopt(_M_TOP_PAD, 64 << 20)  # grow the heap 64 MiB at a time
                )
            except (OSError, AttributeError):  # not glibc (musl, say): nothing to tune
                pass
    return _allocator_tuned


def autocast(device: torch.device, precision: str):
    """bf16 autocast: matmuls/convs in bf16, reductions and the loss stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def environment(device: torch.device) -> dict:
    from . import __version__

    import numpy

    env = {
        "imgclf": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_has_fast_bf16(),
        "malloc_keeps_freed_memory": bool(_allocator_tuned),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = _cpu_name()
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
