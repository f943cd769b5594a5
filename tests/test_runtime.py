"""hypernas.runtime: freed memory is reused (no page faults per new tensor), and the
switch that turns it off works."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, torch, hypernas
    from hypernas.runtime import retained
    x = torch.ones(128, 64, 28, 28)             # 25.7 MB, like an activation at batch 128
    y = torch.ones(10_000_000)                   # 40 MB: above glibc's largest mmap threshold
    for _ in range(10):                          # warm-up: the heap grows to its working size
        (x * 2).sum(); (y * 2).sum()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        (x * 2).sum(); (y * 2).sum()             # new tensors, freed at once
    print(retained(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
""")


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env}, check=True)
    flag, faults = out.stdout.split()
    return flag == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_retained_memory_removes_page_faults():
    on, faults_on = _probe()
    off, faults_off = _probe(HYPERNAS_RETAIN_MEMORY="0")
    assert on and not off
    pages = 10_000_000 * 4 // 4096
    assert faults_on < pages                  # 40 new tensors reuse their blocks: < 1 tensor's pages
    assert faults_off > 10 * pages            # without it, every 40 MB tensor faults its pages in
