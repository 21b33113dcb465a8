"""Training throughput under glibc's default heap against a steady heap, in real seqbench runs.

glibc maps every block above its mmap threshold (adaptive, at most 32 MiB) afresh, so a kernel
that allocates such a block each step faults its pages in again each step: the fused LSTM's
workspace at the Tiny Shakespeare recipe's shape (batch 64, bptt 128, 512 units) is such a block.
``GLIBC_TUNABLES`` can keep every block on one heap that is never trimmed (the "steady heap" of
``bench_cells.py``). This benchmark measures what that is worth in ``python -m seqbench`` runs.

    python benchmarks/bench_heap.py            # -> benchmarks/results/heap-cpu.md
    python benchmarks/bench_heap.py --quick    # small shape, one round, nothing saved

Protocol
* Rows: the recipe's model shape (``pipelines/reproduce/tinyshakespeare.yaml``: char LM,
  embedding 64, 1 layer x 512, bptt 128, batch 64, Adam 2e-3) as the fused LSTM, the scratch
  LSTM and the fused GRU, on the embedded synthetic corpus (offline, no data directory needed;
  24,000 training sentences, ~158 updates an epoch), ``--batches`` training updates and 2
  validation batches. glibc's mmap threshold adapts during the first updates, so a short run
  overstates the steady state: the default 120 updates are mostly past it.
* Each run is a fresh process in its own project root and MLflow store; the two heaps alternate
  in order over ``--rounds`` rounds. Reported per run: its own ``train/tokens_per_s`` (the
  training epoch, with its 2 validation batches) and its process's minor page faults divided by
  the updates (start-up, data and evaluation included, alike under both heaps: ~3,000-4,000 an
  update at the default 120 updates); the median tokens/s and its ratio to glibc's defaults, from
  this run; the process's peak resident set (``wait4``): the steady heap keeps what it freed.
  Every run is listed, because under glibc's defaults one run of a configuration can pay the
  page faults and the next not (the adaptive threshold depends on the order of allocations).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import STEADY_HEAP, default_heap_env, machine_info, markdown_table, report_head, save_report

from mlflow import MlflowClient

RECIPE_SHAPE = ["task=lm", "data=synthetic", "data.num_train=24000", "tokenizer=char", "embedding.dim=64",
                "model.hidden_size=512", "task.bptt=128", "task.batch_size=64", "optimizer=adam", "optimizer.lr=0.002"]
QUICK_SHAPE = ["task=lm", "data=synthetic", "tokenizer=char", "embedding.dim=16", "model.hidden_size=64",
               "task.bptt=32", "task.batch_size=16"]
ROWS = {"LSTM, fused": ["model=lstm", "model.impl=fused"],
        "LSTM, scratch": ["model=lstm", "model.impl=scratch"],
        "GRU, fused": ["model=gru", "model.impl=fused"]}
HEAPS = {"glibc defaults": None, "steady heap": STEADY_HEAP}


def run_once(overrides: list[str], tunables: str | None, batches: int) -> dict:
    """One ``python -m seqbench`` run in a fresh root; its tokens/s and page faults per update."""
    with tempfile.TemporaryDirectory(prefix="bench_heap_") as tmp:
        env = default_heap_env(SEQBENCH_ROOT=tmp, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        cmd = [sys.executable, "-m", "seqbench", *overrides, "trainer.max_epochs=1",
               f"trainer.limit_train_batches={batches}", "trainer.limit_val_batches=2",
               "trainer.enable_progress_bar=false", "task.probe=false", "task.generate.num_samples=1",
               "task.generate.max_new_tokens=20"]
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)            # this run's own resource usage
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.seek(0)
            output = log.read()
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        if proc.returncode or len(runs) != 1 or runs[0].info.status != "FINISHED":
            raise RuntimeError(f"{' '.join(overrides)} ({tunables or 'glibc defaults'}) did not finish: "
                               f"exit {proc.returncode}\n{output[-3000:]}")
        return {"tokens_per_s": runs[0].data.metrics["train/tokens_per_s"], "faults": usage.ru_minflt / batches,
                "peak_mib": usage.ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shape, one round, nothing saved")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=None, help="training updates per run (default 120, quick 4)")
    args = parser.parse_args(argv)
    rounds, batches = (1, args.batches or 4) if args.quick else (args.rounds, args.batches or 120)
    shape = QUICK_SHAPE if args.quick else RECIPE_SHAPE
    started = time.perf_counter()
    results: dict[tuple[str, str], list[dict]] = {}
    for row, model in ROWS.items():
        heaps = list(HEAPS)
        for r in range(rounds):                             # alternate which heap goes first
            for heap in heaps[::-1] if r % 2 else heaps:
                res = run_once([*shape, *model], HEAPS[heap], batches)
                results.setdefault((row, heap), []).append(res)
                print(f"{row}, {heap}: {res['tokens_per_s']:,.0f} tokens/s, {res['faults']:,.0f} faults/update",
                      file=sys.stderr, flush=True)
    rows = []
    for row in ROWS:
        runs = {h: results[(row, h)] for h in HEAPS}
        tps = {h: statistics.median(r["tokens_per_s"] for r in runs[h]) for h in HEAPS}
        for h in HEAPS:
            rows.append([row, h, f"{tps[h]:,.0f}", ", ".join(f"{r['tokens_per_s']:,.0f}" for r in runs[h]),
                         ", ".join(f"{r['faults']:,.0f}" for r in runs[h]),
                         f"{statistics.median(r['peak_mib'] for r in runs[h]):,.0f}",
                         f"{tps[h] / tps['glibc defaults']:.2f}"])
    text = "\n".join([
        *report_head("Training throughput: glibc's default heap vs a steady heap (cpu)",
                     f"python benchmarks/bench_heap.py{' --quick' if args.quick else ''}", started, machine_info("cpu")),
        "## Protocol", "",
        __doc__.split("Protocol\n", 1)[1].strip().replace("\n  ", " "),
        f"* Shape: `{' '.join(shape)}`; {batches} updates, {rounds} round(s).",
        f"* Steady heap: `GLIBC_TUNABLES={STEADY_HEAP}` in the run's environment. It keeps freed memory in "
        "the process (its resident set stays at its peak), serves every thread from one arena and has no "
        "tcache (`_common.restart_on_heap` says why).", "",
        "## Results", "",
        markdown_table(["model", "heap", "tokens/s (median)", "tokens/s (each run)", "page faults/update (each run)",
                        "peak MiB (median)", "x glibc defaults"], rows), ""])
    save_report(text, "heap-cpu.md", save=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
