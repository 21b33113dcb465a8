"""The benchmarks' steady heap (``benchmarks/_common.STEADY_HEAP``, glibc tunables). Under glibc's
defaults a block above the mmap threshold (at most 32 MiB) is a fresh mapping each time, so the
fused LSTM's 64 MiB workspace at the cell benchmark's small shape, and a 64 MiB tensor, fault their
16,384 pages in again on every use; on the steady heap both reuse memory. Each case runs in a child
process, since the tunables are read at process start."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from _common import STEADY_HEAP, default_heap_env  # noqa: E402

PAGES = 64 * 2**20 // 4096

CHILD = """
import resource, sys, torch
torch.set_num_threads(1)
torch.manual_seed(0)
lstm = torch.nn.LSTM(128, 256)                        # bench_cells' small shape: B64 T100 128->256
x = torch.randn(100, 64, 128, requires_grad=True)
cases = {"fused LSTM step": lambda: lstm(x)[0].sum().backward(),
         "64 MiB tensor": lambda: torch.ones(16 * 2**20)}   # posix_memalign, touched, freed
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for name, case in cases.items():
    for _ in range(3):
        case()                                        # warm-up: the heap grows to the peak
    before = faults()
    for _ in range(3):
        case()
    print(name, (faults() - before) / 3)
"""


def faults_per_use(env: dict) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in out.stdout.strip().splitlines()}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables and its mmap threshold")
def test_steady_heap_reuses_large_blocks_that_glibc_maps_afresh():
    default = faults_per_use(default_heap_env())
    steady = faults_per_use(dict(os.environ, GLIBC_TUNABLES=STEADY_HEAP))
    assert default.keys() == steady.keys() == {"fused LSTM step", "64 MiB tensor"}
    for case in default:
        assert default[case] >= 0.9 * PAGES, (case, default)  # every page of a fresh mapping
        assert steady[case] < 0.02 * PAGES, (case, steady)    # reused from the heap
