"""hypernas.fast.process: freed memory is reused (no page faults per new tensor), and the
switch that turns it off works."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import resource, sys, torch, hypernas
    from hypernas.fast.process import retain_freed_memory, retained
    assert not retained()                        # importing hypernas changes nothing
    if sys.argv[1] == "apply":
        retain_freed_memory()                    # what the CLI and the trainer do
    # 40 MB: above glibc's largest (adaptive) mmap threshold, so by default every such
    # tensor is mmapped and unmapped again; smaller ones make the default's behaviour
    # depend on history (its threshold adapts), which is no ground for a test
    y = torch.ones(10_000_000)
    for _ in range(10):                          # warm-up: the heap grows to its working size
        (y * 2).sum()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        (y * 2).sum()                            # a new 40 MB tensor, freed at once
    print(retained(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
""")


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE, "apply"], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env}, check=True)
    flag, faults = out.stdout.split()
    return flag == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_retained_memory_removes_page_faults():
    on, faults_on = _probe()
    off, faults_off = _probe(HYPERNAS_RETAIN_MEMORY="0")
    assert on and not off
    pages = 10_000_000 * 4 // 4096
    assert faults_off >= 15 * pages           # glibc's default: (nearly) every tensor faults its pages in
    assert faults_on <= faults_off / 4        # retained: blocks are reused (a few stray re-faults
                                              # of one tensor's pages were seen, never most)
