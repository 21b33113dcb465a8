"""Sequence-length sweep: training tokens/s of the parallel-scan cells against their own
sequential mode and torch's fused GRU/LSTM, at equal hidden size, for T = 64 ... 4096.

    python benchmarks/bench_scan.py            # -> benchmarks/results/scan-<device>.md
    python benchmarks/bench_scan.py --quick    # tiny sizes, table printed only

Protocol
* One layer, B = 16, I = H = 128, float32; one timed step = zero grads, ``out, _ = stack(x)``,
  ``out.sum().backward()`` (input requires grad, as behind an embedding), zero initial state.
* Rows: minGRU and minLSTM in ``mode=scan`` (log-space parallel scan, Heinsen 2023),
  ``mode=loop`` (the gates of all steps at once, then the linear recurrence step by step with its
  hand-written backward; what ``mode=auto`` runs on a CPU) and ``mode=sequential`` (the same cell
  as a Python loop of autograd steps), fused ``nn.GRU`` and ``nn.LSTM``.
  The sequential mode is timed only up to ``--max-sequential-T`` (a loop of T autograd steps).
* Per T: warm-up, then ``--repeats`` rounds, each timing every row once in a rotated order (load
  from other processes hits all rows alike); tokens/s = B*T / median time; ratios are to the fused
  ``nn.GRU`` of the same T, measured in the same run. The CPU time other processes used during
  the timed blocks is reported (0.00 cores: the machine was ours).
* A second table holds T fixed (256) and varies the batch x width (B x H): the log-space scan makes
  several exp/log passes over all B*T*H numbers (``torch.logcumsumexp`` forward, three more in its
  backward), the loop mode T fused multiply-adds on B*H numbers each way, the sequential mode T
  autograd steps.
* CPU: the timed steps run on a steady heap (``_common.restart_on_heap``: one glibc arena, mmap,
  trimming and tcache off), so that large per-step blocks (the scan's (B, T, H) arrays at long T) reuse memory
  instead of faulting in fresh pages every step, as under a caching allocator; ``--heap glibc``
  keeps glibc's defaults.
Goal (issue 14): on CPU at T = 512 the minimal cells' training mode reaches >= 2x fused ``nn.GRU``
tokens/s (the log-space scan alone does not: its logcumsumexp passes are the cost; ``loop`` is the
CPU mode).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, device_kind, load_average, machine_info,  # noqa: E402
                     markdown_table, add_heap_argument, heap_label, restart_on_heap)

from seqbench.cells import build_stack  # noqa: E402

ROWS = {  # label -> build_stack kwargs
    "minGRU scan": dict(cell="mingru", mode="scan"),
    "minLSTM scan": dict(cell="minlstm", mode="scan"),
    "minGRU loop": dict(cell="mingru", mode="loop"),
    "minLSTM loop": dict(cell="minlstm", mode="loop"),
    "minGRU sequential": dict(cell="mingru", mode="sequential"),
    "minLSTM sequential": dict(cell="minlstm", mode="sequential"),
    "nn.GRU (fused)": dict(cell="gru", impl="fused"),
    "nn.LSTM (fused)": dict(cell="lstm", impl="fused"),
}
REFERENCE = "nn.GRU (fused)"


def make_step(kwargs: dict, B: int, T: int, H: int, device: str):
    torch.manual_seed(0)
    stack = build_stack(input_size=H, hidden_size=H, **kwargs).to(device)
    x = torch.randn(B, T, H, device=device, requires_grad=True)

    def step():
        stack.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = stack(x)
        out.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
    return step


def measure(points: list[tuple[int, int, int]], device: str, repeats: int, warmup: int, max_seq_T: int,
            other: OtherLoad):
    """Median-able step times per (row, (B, T, H)) point, every row timed once per round."""
    times: dict[tuple[str, tuple], list[float]] = {}
    for point in points:
        B, T, H = point
        rows = [r for r in ROWS if "sequential" not in r or T <= max_seq_T]
        steps = {r: make_step(ROWS[r], B, T, H, device) for r in rows}
        for r in rows:
            for _ in range(warmup):
                steps[r]()
        for k in range(repeats):
            order = rows[k % len(rows):] + rows[:k % len(rows)]
            for r in order:
                with other:
                    start = time.perf_counter()
                    steps[r]()
                    times.setdefault((r, point), []).append(time.perf_counter() - start)
        print(f"B={B} T={T} H={H}: " + ", ".join(
            f"{r} {B * T / statistics.median(times[(r, point)]):,.0f} tok/s" for r in rows), flush=True)
    return times


def table(times: dict, points: list[tuple[int, int, int]], header: list[str]) -> str:
    """tokens/s per row and point, with the ratio to fused nn.GRU at the same point ("–": not timed)."""
    rows = []
    for r in ROWS:
        cells = []
        for point in points:
            if (r, point) not in times:
                cells.append("–")
                continue
            tokens = point[0] * point[1]
            tps = tokens / statistics.median(times[(r, point)])
            ref = tokens / statistics.median(times[(REFERENCE, point)])
            cells.append(f"{tps:,.0f} ({tps / ref:.2f}×)")
        rows.append([r] + cells)
    return markdown_table(["row", *header], rows)


def command_args(argv) -> str:
    """The arguments of this run as the results file's command line shows them."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "".join(f" {a}" for a in args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-sequential-T", type=int, default=1024)
    add_heap_argument(parser)
    args = parser.parse_args(argv)
    device = device_kind()
    steady = restart_on_heap(device == "cpu" and args.heap == "steady")
    if args.threads:
        torch.set_num_threads(args.threads)
    B, H = (4, 16) if args.quick else (16, 128)
    Ts = [16, 64] if args.quick else [64, 256, 512, 1024, 2048, 4096]
    T_fixed = 16 if args.quick else 256
    shapes = [(4, 16), (8, 32)] if args.quick else [(16, 128), (64, 128), (16, 512), (64, 512)]
    length_points = [(B, T, H) for T in Ts]
    shape_points = [(b, T_fixed, h) for b, h in shapes]
    repeats, warmup = (2, 1) if args.quick else (args.repeats, 2)
    other = OtherLoad()
    times = measure(length_points, device, repeats, warmup, args.max_sequential_T, other)
    times.update(measure([p for p in shape_points if p not in length_points], device, repeats, warmup,
                         args.max_sequential_T, other))
    info = machine_info(device)
    if device == "cpu":
        info["heap (timed steps)"] = heap_label(steady)
    lines = ["# Sequence-length sweep: parallel scan vs sequential vs fused", "",
             f"`python benchmarks/bench_scan.py{command_args(argv)}` — forward+backward, 1 layer, I = H, float32, median of "
             f"{repeats} rounds; ratio to fused nn.GRU at the same shape, measured in this run.", "",
             *[f"- {k}: {v}" for k, v in info.items()],
             f"- load average at the end: {load_average()}; other processes used {other.cores:.2f} cores "
             f"during the timed steps", "",
             f"## Sequence length (B={B}, H={H})", "",
             table(times, length_points, [f"T={T} tok/s (× GRU)" for T in Ts]), "",
             f"## Batch x width at T={T_fixed}", "",
             "The log-space scan makes several exp/log passes over all B·T·H numbers (its GPU strength, "
             "parallel over T, does not help on 2 cores); the loop mode computes the gates of all steps "
             "at once and then T fused multiply-adds on B·H numbers each way with no autograd graph; the "
             "sequential mode runs T autograd steps. All three compute the same function; `mode=auto` "
             "picks the loop on a CPU.", "",
             table(times, shape_points, [f"B={b} H={h} tok/s (× GRU)" for b, _, h in shape_points]), ""]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"scan-{device}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
