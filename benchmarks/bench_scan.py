"""Sequence-length sweep: training tokens/s of the parallel-scan cells against their own
sequential mode and torch's fused GRU/LSTM, at equal hidden size, for T = 64 ... 4096.

    python benchmarks/bench_scan.py            # -> benchmarks/results/scan-<device>.md
    python benchmarks/bench_scan.py --quick    # tiny sizes, table printed only

Protocol
* One layer, B = 16, I = H = 128, float32; one timed step = zero grads, ``out, _ = stack(x)``,
  ``out.sum().backward()`` (input requires grad, as behind an embedding), zero initial state.
* Rows: minGRU and minLSTM in ``mode=scan`` (log-space parallel scan, Heinsen 2023) and
  ``mode=sequential`` (the same cell as a Python loop of steps), fused ``nn.GRU`` and ``nn.LSTM``.
  The sequential mode is timed only up to ``--max-sequential-T`` (a loop of T autograd steps).
* Per T: warm-up, then ``--repeats`` rounds, each timing every row once in a rotated order (load
  from other processes hits all rows alike); tokens/s = B*T / median time; ratios are to the fused
  ``nn.GRU`` of the same T, measured in the same run. The CPU time other processes used during
  the timed blocks is reported (0.00 cores: the machine was ours).
Goal (issue 14): on CPU at T = 512 the scan reaches >= 2x fused ``nn.GRU`` tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, OtherLoad, device_kind, load_average, machine_info, markdown_table  # noqa: E402

from seqbench.cells import build_stack  # noqa: E402

ROWS = {  # label -> build_stack kwargs
    "minGRU scan": dict(cell="mingru", mode="scan"),
    "minLSTM scan": dict(cell="minlstm", mode="scan"),
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


def measure(Ts: list[int], B: int, H: int, device: str, repeats: int, warmup: int, max_seq_T: int):
    times: dict[tuple[str, int], list[float]] = {}
    other = OtherLoad()
    for T in Ts:
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
                    times.setdefault((r, T), []).append(time.perf_counter() - start)
        print(f"T={T}: " + ", ".join(f"{r} {B * T / statistics.median(times[(r, T)]):,.0f} tok/s" for r in rows),
              flush=True)
    return times, other


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-sequential-T", type=int, default=1024)
    args = parser.parse_args(argv)
    device = device_kind()
    if args.threads:
        torch.set_num_threads(args.threads)
    B, H = (4, 16) if args.quick else (16, 128)
    Ts = [16, 64] if args.quick else [64, 256, 512, 1024, 2048, 4096]
    times, other = measure(Ts, B, H, device, 2 if args.quick else args.repeats, 1 if args.quick else 2,
                           args.max_sequential_T)
    header = ["row"] + [f"T={T} tok/s (× GRU)" for T in Ts]
    rows = []
    for r in ROWS:
        cells = []
        for T in Ts:
            if (r, T) not in times:
                cells.append("–")
                continue
            tps = B * T / statistics.median(times[(r, T)])
            ref = B * T / statistics.median(times[(REFERENCE, T)])
            cells.append(f"{tps:,.0f} ({tps / ref:.2f}×)")
        rows.append([r] + cells)
    info = machine_info(device)
    lines = ["# Sequence-length sweep: parallel scan vs sequential vs fused", "",
             f"`python benchmarks/bench_scan.py` — B={B}, I=H={H}, 1 layer, forward+backward, float32, "
             f"median of {args.repeats} rounds; ratio to fused nn.GRU of the same T in this run.", "",
             *[f"- {k}: {v}" for k, v in info.items()],
             f"- load average at the end: {load_average()}; other processes used {other.cores:.2f} cores "
             f"during the timed steps", "", markdown_table(header, rows), ""]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"scan-{device}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
