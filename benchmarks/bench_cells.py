"""Cell zoo benchmark: forward+backward tokens/s and peak memory of every cell x implementation.

    python benchmarks/bench_cells.py            # full run -> benchmarks/results/cells-<device>.md
    python benchmarks/bench_cells.py --quick    # smoke run on tiny sizes, prints the table only
    python benchmarks/bench_cells.py --threads 2,1 --repeats 9   # both thread counts

Protocol
* Two sizes: small (B64 T100 I128 -> H256, 1 layer) and large (B20 T35 I650 -> H650, 2 layers).
* One timed step = zero the grads, ``out, _ = stack(x)``, ``out.sum().backward()`` with an
  input that requires grad (as behind an embedding), zero initial state, float32.
* Warm-up steps first, then ``--repeats`` rounds; each round times every configuration once,
  in a rotated order, so that load from other processes hits all configurations alike.
  Reported: median and best wall time, tokens/s = B*T / median, and the ratio to the fused
  ``nn.LSTM`` measured in the same run (bidirectional models: to the fused bidirectional LSTM),
  from the medians and from the best times. ``eager loop`` is the same scratch cell run
  as a Python loop of ``cell_step`` under autograd, for comparison: for the LSTM, for each cell
  with a hand-written backward (its ``recurrence``), and for the cells with a parallel-scan
  ``mode`` (minGRU, minLSTM: there it is their sequential mode).
* The cells are every registered one (``seqbench.cells.available_cells``), with each
  implementation it has; bidirectional rows for the cells torch fuses. A cell that refuses a
  size's layout (e.g. more than one layer) is left out of that size.
* Peak memory on CPU: growth of the peak resident set (VmHWM, reset through
  ``/proc/self/clear_refs``) during one step over the resident set before it, measured in a
  child process whose glibc mmap threshold is pinned at 64 KiB and whose free heap is handed
  back (``malloc_trim``) before each step, so memory freed earlier is counted again when reused.
  It covers everything the step allocates: saved activations, workspaces, gradients, outputs.
  On CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the step.
* Heap (CPU): the timed steps run on a steady heap (``GLIBC_TUNABLES``: one arena, no mmap, no
  trimming, no tcache; the script re-executes itself so, ``_common.restart_on_heap``), so that
  after the warm-up a step reuses memory, as under a caching allocator (jemalloc, tcmalloc, or
  torch's on CUDA); the page-fault column shows that it did. Under glibc's defaults a
  block above the mmap threshold (adaptive, at most 32 MiB) is mapped afresh on every
  allocation, and its pages fault in again on every step: the fused LSTM's 64 MiB workspace at
  the small size pays ~16,000 faults a step, which adds 10-20 ms, while for smaller blocks it
  depends on what ran before in the process. Ratios against a baseline that pays that on some
  hosts and runs and not on others do not compare; the steady heap takes page faults out of
  every row (where glibc's defaults pay none, as for the fused LSTM at the large size, the
  steady heap can be a few % slower: it has no tcache). Each section also times the fused reference under glibc's defaults in a
  child process (same warm-up and rounds), so what a default setup costs stays visible
  (``--heap glibc`` runs the whole benchmark so).
* Page faults/step (CPU): the median count of minor page faults during a timed step (pages
  the step got fresh from the kernel, each first touch of a 4 KiB page one fault).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, device_kind, load_average, machine_info,  # noqa: E402
                     default_heap_env, markdown_table, add_heap_argument, heap_label, restart_on_heap)

from seqbench.cells import available_cells, build_stack, cell_class, count_parameters, fused_cells  # noqa: E402
from seqbench.errors import ConfigError  # noqa: E402

SIZES = {
    "small": dict(B=64, T=100, I=128, H=256, L=1),
    "large": dict(B=20, T=35, I=650, H=650, L=2),
}
QUICK_SIZES = {
    "tiny": dict(B=8, T=12, I=16, H=32, L=1),
    "tiny-2layer": dict(B=4, T=8, I=16, H=16, L=2),
}
def all_configs() -> list[tuple]:
    """(model, cell, bidirectional, impl) of every registered cell and implementation; the first
    fused LSTM of each direction is the reference."""
    out = [("lstm", "lstm", False, "fused"), ("lstm", "lstm", False, "scratch"),
           ("lstm", "lstm", False, "eager loop")]
    for cell in available_cells():
        if cell == "lstm":
            continue
        cls = cell_class(cell)
        out += [(cell, cell, False, impl) for impl in (["fused"] if cls.fused_module else []) + ["scratch"]]
        if "mode" in cls.choices or "recurrence" in vars(cls):  # a scan cell, or a hand-written backward:
            out.append((cell, cell, False, "eager loop"))      # its step-by-step loop under autograd too
    for cell in sorted(fused_cells(), key=lambda c: c != "lstm"):
        out += [(f"bi{cell}", cell, True, impl) for impl in ("fused", "scratch")]
    return out


CONFIGS = all_configs()


def builds(config, size: dict) -> bool:
    """Whether the cell takes this size's layout (a meta-device build: no memory, no init)."""
    _, cell, bidirectional, impl = config
    try:
        count_parameters(cell=cell, input_size=size["I"], hidden_size=size["H"], num_layers=size["L"],
                         bidirectional=bidirectional, impl="scratch" if impl == "eager loop" else impl)
    except ConfigError:
        return False
    return True


def reference_of(config) -> tuple:
    return ("bilstm", "lstm", True, "fused") if config[2] else ("lstm", "lstm", False, "fused")


def make_case(config, size: dict, device: str):
    """(step function, stack) for one configuration; the step is one forward+backward."""
    _, cell, bidirectional, impl = config
    torch.manual_seed(0)
    stack = build_stack(cell, size["I"], size["H"], num_layers=size["L"],
                        bidirectional=bidirectional,
                        impl="scratch" if impl == "eager loop" else impl).to(device)
    if impl == "eager loop":                                 # cell_step in a loop, autograd
        stack.fast = False
    x = torch.randn(size["B"], size["T"], size["I"], device=device, requires_grad=True)

    def step():
        for p in stack.parameters():
            p.grad = None
        x.grad = None
        out, _ = stack(x)
        out.sum().backward()
    return step, stack


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_all(configs, size: dict, device: str, repeats: int,
             warmup: int) -> tuple[dict, dict, OtherLoad]:
    """{config: [wall seconds per step]} and {config: [minor page faults per step]}, interleaved
    rounds in rotated order, and how busy the rest of the machine was during the timed steps."""
    steps = {c: make_case(c, size, device)[0] for c in configs}
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync(device)
    times, faults = {c: [] for c in configs}, {c: [] for c in configs}
    other = OtherLoad()
    for r in range(repeats):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for c in order:
            sync(device)
            with other:
                f0, t0 = minor_faults(), time.perf_counter()
                steps[c]()
                sync(device)
                times[c].append(time.perf_counter() - t0)
                faults[c].append(minor_faults() - f0)
    return times, faults, other


def run_child(flag: str, payload, threads: int, env: dict, what: str) -> dict | None:
    """Run this script as a child on glibc's default heap (``env``) with ``flag payload`` (JSON)
    and return what it printed last, ``{config: value}``; None (and a note) when it fails."""
    cmd = [sys.executable, __file__, flag, json.dumps(payload), "--threads", str(threads), "--heap", "glibc"]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800)
        return {tuple(c): v for c, v in json.loads(out.stdout.strip().splitlines()[-1])}
    except (subprocess.SubprocessError, OSError, ValueError) as err:
        print(f"{what} not measured: {err}", file=sys.stderr)
        return None


def time_in_child(configs, size: dict, repeats: int, warmup: int, threads: int) -> dict:
    """{config: (median s, median page faults)} of ``configs`` timed in a fresh process on
    glibc's default heap; {} when the child fails."""
    measured = run_child("--timing-child", [size, configs, repeats, warmup], threads, default_heap_env(),
                         "glibc-heap reference")
    return {c: tuple(v) for c, v in (measured or {}).items()}


def glibc_reference_note(configs, size: dict, times: dict, repeats: int, warmup: int,
                         threads: int) -> str:
    """A sentence: the fused references' median step time and page faults on glibc's default
    heap, next to their time on the steady heap of the table."""
    refs = [c for c in configs if c[3] == "fused" and reference_of(c) == c]
    measured = time_in_child(refs, size, repeats, warmup, threads)
    if not measured:
        return "The fused references could not be timed on glibc's default heap (see the log)."
    parts = [f"{c[0]} fused {measured[c][0] * 1e3:.1f} ms/step with {measured[c][1]:,.0f} page "
             f"faults/step (steady heap: {statistics.median(times[c]) * 1e3:.1f} ms)"
             for c in refs if c in measured]
    return ("On glibc's default heap (a child process, same warm-up and rounds): "
            + "; ".join(parts) + ".")


# ------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), so that reusing them counts
    as growth again: without it, memory an earlier configuration freed stays resident."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_here(configs, size: dict, device: str) -> dict:
    """{config: MiB} measured in this process (CUDA allocator, or Linux VmHWM)."""
    result = {}
    for c in configs:
        step, stack = make_case(c, size, device)
        step()                                               # warm-up: lazy inits, caches
        for p in stack.parameters():
            p.grad = None
        sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            sync(device)
            result[c] = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            _release_free_heap()
            Path("/proc/self/clear_refs").write_text("5")    # reset the peak to the current RSS
            base = _status_kib("VmHWM")
            step()
            result[c] = (_status_kib("VmHWM") - base) / 1024
        del step, stack
    return result


def peak_memory(configs, size: dict, device: str, threads: int) -> dict:
    if device == "cuda":
        return peak_memory_here(configs, size, device)
    measured = run_child("--memory-child", [size, configs], threads,
                         default_heap_env(MALLOC_MMAP_THRESHOLD_="65536"), "peak memory") or {}
    return {c: measured.get(c) for c in configs}


# ------------------------------------------------------------------ report
def size_label(name: str, s: dict) -> str:
    layers = f"{s['L']} layer" + ("s" if s["L"] > 1 else "")
    return f"{name}: B{s['B']} T{s['T']} I{s['I']} H{s['H']}, {layers}"


def table(configs, size: dict, times: dict, faults: dict, memory: dict) -> str:
    rows = []
    tokens = size["B"] * size["T"]
    for c in configs:
        med, best = statistics.median(times[c]), min(times[c])
        ref = reference_of(c)
        ratio = statistics.median(times[ref]) / med if ref in times else float("nan")
        ratio_best = min(times[ref]) / best if ref in times else float("nan")
        mem = memory.get(c)
        rows.append([c[0], c[3], f"{med * 1e3:.1f}", f"{best * 1e3:.1f}", f"{tokens / med:,.0f}",
                     f"{ratio:.2f}", f"{ratio_best:.2f}", f"{statistics.median(faults[c]):,.0f}",
                     "n/a" if mem is None else f"{mem:.1f}"])
    header = ["model", "impl", "ms/step (median)", "ms/step (best)", "tokens/s",
              "x fused LSTM (median)", "x fused LSTM (best)", "page faults/step", "peak MiB"]
    return markdown_table(header, rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats, no file")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, quick 2)")
    parser.add_argument("--threads", default=None,
                        help="torch intra-op threads, or a list run one after the other, e.g. 2,1")
    parser.add_argument("--only", default=None, help="comma-separated models, e.g. lstm,cifg")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    add_heap_argument(parser)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    device = device_kind()

    if args.memory_child is not None:                        # child process: memory only
        torch.set_num_threads(thread_counts[0])
        size, configs = json.loads(args.memory_child)
        measured = peak_memory_here([tuple(c) for c in configs], size, device)
        print(json.dumps([[list(c), v] for c, v in measured.items()]))
        return
    if args.timing_child is not None:                        # child process: glibc-heap timings
        torch.set_num_threads(thread_counts[0])
        size, configs, repeats, warmup = json.loads(args.timing_child)
        configs = [tuple(c) for c in configs]
        times, faults, _ = time_all(configs, size, device, repeats, warmup)
        print(json.dumps([[list(c), [statistics.median(times[c]), statistics.median(faults[c])]]
                          for c in configs]))
        return

    steady = restart_on_heap(device == "cpu" and args.heap == "steady")
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = args.repeats or (2 if args.quick else 7)
    warmup = 1 if args.quick else 2
    configs = CONFIGS
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in CONFIGS if c[0] in wanted or reference_of(c) == c]
    load_before = load_average()
    started = time.perf_counter()
    sections, loads = [], []
    # memory does not depend on the thread count: one thread keeps the child fast under load
    runnable = {name: [c for c in configs if builds(c, size)] for name, size in sizes.items()}
    memory = {name: peak_memory(runnable[name], size, device, 1) for name, size in sizes.items()}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, size in sizes.items():
            print(f"[bench_cells] {threads} thread(s), {size_label(name, size)} ...", file=sys.stderr,
                  flush=True)
            times, faults, other = time_all(runnable[name], size, device, repeats, warmup)
            loads.append(f"{other.cores:.2f}")
            glibc = ("\n\n" + glibc_reference_note(runnable[name], size, times, repeats, warmup, threads)
                     if steady else "")
            sections.append(
                f"### {size_label(name, size)}; {threads} thread{'s' if threads > 1 else ''}\n\n"
                f"Other processes kept {other.cores:.2f} of {os.cpu_count()} cores busy during "
                f"these steps (on average).{glibc}\n\n"
                f"{table(runnable[name], size, times, faults, memory[name])}\n")
    wall = time.perf_counter() - started
    load_after = load_average()

    info = machine_info(device)
    info["torch threads (intra-op)"] = ", ".join(map(str, thread_counts))
    if device == "cpu":
        info["heap (timed steps)"] = heap_label(steady)
    reference = "cuDNN" if device == "cuda" else "oneDNN, torch's CPU RNN kernels"
    text = "\n".join([
        f"# Recurrent cells: forward+backward throughput ({device}){' - quick' if args.quick else ''}",
        "",
        f"Generated by `python benchmarks/bench_cells.py"
        f"{' ' + ' '.join(sys.argv[1:]) if argv is None and sys.argv[1:] else ''}` "
        f"in {wall / 60:.1f} min. fused = torch's `nn.RNN/LSTM/GRU` ({reference}); "
        "scratch = `seqbench.cells`, a hand-written BPTT (`torch.autograd.Function` per layer "
        "and direction).",
        "",
        markdown_table(["machine", ""], [[k, v] for k, v in info.items()]),
        "",
        "## Protocol",
        "",
        __doc__.split("Protocol\n", 1)[1].strip().replace("\n  ", " "),
        f"* Warm-up steps per configuration: {warmup}; timed rounds: {repeats}. Peak memory is "
        "measured with 1 thread.",
        "",
        "## Load during the run",
        "",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}. Other processes "
        f"kept {', '.join(loads)} cores busy on average during the timed steps of the sections "
        f"below (from /proc/stat minus this process). Anything clearly above 0 means the "
        f"{os.cpu_count()} cores were shared: all timings are then slower and noisier, and "
        "OpenMP-threaded code (every configuration here with 2 threads) suffers most, because a "
        "parallel region waits for its slowest thread. The interleaved rounds spread the load "
        "over all configurations; the 'best' columns show the least disturbed steps.",
        "",
        "## Results",
        "",
        *sections,
    ])
    print(text)
    out = args.out or (None if args.quick else RESULTS / f"cells-{device}.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"[bench_cells] wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
