"""The benchmarks' steady heap (``benchmarks/_common.steady_heap``). Under glibc's defaults a block
above the mmap threshold (at most 32 MiB) is a fresh mapping each time, so the fused LSTM's
64 MiB workspace at the cell benchmark's small shape faults its 16,384 pages in again on every
step; on the steady heap the step reuses memory. Run in a child process: ``mallopt`` changes the
whole process."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
WORKSPACE_PAGES = 64 * 2**20 // 4096

CHILD = f"""
import resource, sys, torch
sys.path.insert(0, {str(BENCHMARKS)!r})
from _common import steady_heap
if sys.argv[1] == "steady":
    assert steady_heap()
torch.set_num_threads(1)
torch.manual_seed(0)
lstm = torch.nn.LSTM(128, 256)                        # bench_cells' small shape: B64 T100 128->256
x = torch.randn(100, 64, 128, requires_grad=True)
def step():
    out, _ = lstm(x)
    out.sum().backward()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()                                            # warm-up: the heap grows to the step's peak
before = faults()
for _ in range(3):
    step()
print((faults() - before) / 3)
"""


def faults_per_step(heap: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, heap], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt and its mmap threshold")
def test_steady_heap_spares_the_fused_lstm_its_per_step_page_faults():
    assert faults_per_step("glibc") >= 0.9 * WORKSPACE_PAGES      # the workspace, mapped afresh
    assert faults_per_step("steady") < 0.02 * WORKSPACE_PAGES     # reused from the heap
