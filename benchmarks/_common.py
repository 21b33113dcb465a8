"""Helpers shared by the ``benchmarks/bench_*.py`` scripts: machine description, load, tables."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
import sys
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


#: glibc tunables (read at process start) of the steady heap, see :func:`restart_on_heap`
STEADY_HEAP = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:"
               "glibc.malloc.tcache_count=0")


def on_steady_heap() -> bool:
    return os.environ.get("GLIBC_TUNABLES") == STEADY_HEAP


def restart_on_heap(steady: bool) -> bool:
    """Make this script run on the steady heap (``steady``) or on glibc's defaults: re-execute it
    (same interpreter and ``sys.argv``) with ``GLIBC_TUNABLES`` set to :data:`STEADY_HEAP` or
    unset, unless it already runs so. Returns whether it runs on the steady heap; where the C
    library is not glibc, False and nothing changes.

    glibc maps a block above its mmap threshold (adaptive, at most 32 MiB) afresh on every
    allocation, so a kernel that allocates such a block per step (the fused LSTM's 64 MiB
    workspace) faults its pages in again every step, and whether a smaller block does depends on
    what ran before. The steady heap serves every block from one heap that keeps what is freed,
    as a caching allocator (jemalloc, tcmalloc; torch's on CUDA) does: no mmap, no trimming; one
    arena, because a thread's own arena is a mapping glibc unmaps whenever it empties (seen: the
    fused biLSTM with 2 threads); no tcache, because small blocks parked there sit between a
    freed large block and the top of the heap, so an aligned allocation (``posix_memalign``,
    torch's) of the same size grows the heap instead of reusing it (glibc 2.36)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    if steady != on_steady_heap():
        env = dict(os.environ, GLIBC_TUNABLES=STEADY_HEAP) if steady else default_heap_env()
        sys.stdout.flush(), sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    return steady


def add_heap_argument(parser) -> None:
    """The ``--heap`` option of a timing script (see :func:`restart_on_heap`)."""
    parser.add_argument("--heap", choices=("steady", "glibc"), default="steady",
                        help="CPU allocator for the timed steps: steady heap (default) or glibc's defaults")


def heap_label(steady: bool) -> str:
    """The results file's line for the heap the timed steps ran on."""
    return "steady (GLIBC_TUNABLES: 1 arena, no mmap, no trim, no tcache)" if steady else "glibc defaults"


def default_heap_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that must run on glibc's default heap."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(extra)
    return env


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
