"""Helpers shared by the ``benchmarks/bench_*.py`` scripts: machine description, load, tables."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import os
import platform
import re
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_kind() -> str:
    """``cuda`` when a GPU is visible, else ``cpu`` (names the result file)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(device: str) -> dict[str, str]:
    """What a reader needs to compare two result files."""
    info = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "device": device,
        "CPU": cpu_model(),
        "CPU cores (os.cpu_count)": str(os.cpu_count()),
        "torch threads (intra-op)": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "BLAS / oneDNN": ("MKL" if torch.backends.mkl.is_available() else "no MKL") + " / "
                         + ("oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN"),
    }
    if device == "cuda":
        info["GPU"] = torch.cuda.get_device_name()
        info["CUDA / cuDNN"] = f"{torch.version.cuda} / {torch.backends.cudnn.version()}"
    return info


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


#: glibc ``mallopt`` parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def steady_heap() -> bool:
    """Serve every allocation of this process from one heap and keep freed memory there (glibc
    ``mallopt``: ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD = 2 GiB``, ``M_ARENA_MAX = 1``), so that
    after the warm-up a step reuses memory instead of paying page faults for fresh mappings. One
    arena, because a thread's own arena is a mapping that glibc unmaps whenever it empties, so a
    worker thread's blocks would fault in afresh on every step (seen: the fused biLSTM with 2
    threads). Call it before the threads allocate. Not every block is reused: with mmap off,
    glibc 2.36's aligned allocation (``posix_memalign``, torch's) of a block as large as a freed
    one may grow the heap instead; a page-fault count shows whether a step pays that. glibc maps a block above
    its mmap threshold (adaptive, at most 32 MiB) afresh on every allocation, so by default a
    kernel that allocates such a block per step (the fused LSTM's 64 MiB workspace) pays its page
    faults every step, and whether a smaller one does depends on what ran before. A caching
    allocator (jemalloc, tcmalloc; torch's on CUDA) behaves like the steady heap. Returns False
    where glibc's ``mallopt`` is not available (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(libc.mallopt(param, value) for param, value in
                   ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
    except (OSError, AttributeError):
        return False


def busy_core_seconds() -> float:
    """CPU seconds all cores of the machine have been busy since boot (``/proc/stat``: every state
    but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU time other processes used while this one ran (Linux ``/proc/stat`` minus own rusage).

    ``with meter: work()`` accumulates; ``meter.cores`` is the average number of cores the rest of
    the machine kept busy during the measured blocks (0 when the machine was ours alone).
    """

    def __init__(self):
        self.other_s = 0.0
        self.wall_s = 0.0
        self.available = Path("/proc/stat").exists()

    @staticmethod
    def _own_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __enter__(self):
        if self.available:
            self._start = (busy_core_seconds(), self._own_s(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        if self.available:
            busy, own, wall = self._start
            self.other_s += max(0.0, (busy_core_seconds() - busy) - (self._own_s() - own))
            self.wall_s += time.perf_counter() - wall

    @property
    def cores(self) -> float:
        return self.other_s / self.wall_s if self.wall_s > 0 else float("nan")
