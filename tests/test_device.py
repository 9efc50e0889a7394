"""device: the allocator setting, bf16 against fp32."""

import pytest
import torch


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_malloc_keeps_freed_memory_unless_told_not_to(tmp_path):
    # Process-global, so each setting gets its own interpreter. A freed, touched 64 MiB block stays
    # resident (kept in the heap for the next step) when on; glibc's default munmaps it at once.
    import os
    import subprocess
    import sys

    code = ("import os; from imgclf.device import keep_freed_memory as k; import torch; on = k(); "
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20; "
            "a = torch.ones(64 << 20, dtype=torch.uint8); r1 = rss(); del a; print(on, k(), r1 - rss())")
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                     env={**os.environ, **env}, check=True).stdout.split()
    on, again, released = run({})
    assert on == again == "True" and int(released) < 16  # MiB given back to the kernel on free
    on, again, released = run({"IMGCLF_MALLOC": "system"})
    assert on == again == "False" and int(released) >= 48


def test_bf16_and_fp32_agree_on_a_fixed_batch():
    from imgclf.models import create_model

    torch.manual_seed(0)
    m = create_model("seed-cnn", 2).eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x).float()
    rel = (low - ref).norm() / ref.norm()
    assert rel < 2e-2, rel
