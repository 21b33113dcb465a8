"""The cost of a run: a whole ``python -m seqbench`` run against a bare PyTorch training loop that
trains the same model on the same data the same way, both timed as whole processes, with where
seqbench's wall time goes; and how long a finished study takes to resume.

    python benchmarks/bench_run_cost.py            # -> benchmarks/results/run-cost-cpu.md
    python benchmarks/bench_run_cost.py --quick    # a small shape, one round, nothing saved

Protocol
* The run: Tiny Shakespeare, characters (``$SEQBENCH_DATA_DIR/tinyshakespeare/input.txt``; its
  first 90 % train, the next 5 % validate), embedding 200 → 2-layer LSTM of 200 → linear, plain
  SGD (lr 1), gradient norm clipped at 0.5, truncated BPTT of 35 steps over 20 columns with the
  state carried, one epoch, then one validation pass (Zaremba et al. 2014, "Recurrent neural
  network regularization", small configuration, without dropout).
* ``bare loop``: that run written out in this file (:func:`bare_loop`, ``torch`` only: read the
  file, map characters to ids, train, validate, print), run as ``bench_run_cost.py --bare-loop``; ``seqbench``: ``python -m seqbench`` with
  the same settings, which also tests on the held-out test split, writes one 100-character sample
  and records the run in MLflow (a fresh store per process). Each is a fresh process, timed from
  start to exit; the rows alternate in order over ``--rounds`` rounds, the median is reported.
* Breakdown of the seqbench run, from the same processes: ``imports`` (a process importing what
  ``python -m seqbench`` imports, less an empty interpreter's start), and from Lightning's
  ``SimpleProfiler`` in those runs: data preparation and set-up, training (the epoch less its
  validation), validation, test; ``the rest`` is the process's wall time less all of these:
  interpreter start, Hydra's composition, checks, the sample, MLflow logging, exit.
* Tokens/s: the training tokens over the training time (seqbench: its logged ``train/tokens_per_s``).
* Resume: a finished two-configuration study, ``python -m seqbench.sweep <study>`` again, as a whole
  process (every configuration already FINISHED by this code: nothing runs).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, markdown_table, report_head, save_report

SHAPE = {"embedding": 200, "hidden": 200, "layers": 2, "bptt": 35, "batch": 20, "lr": 1.0, "clip": 0.5}
QUICK = {**SHAPE, "embedding": 32, "hidden": 32, "limit": 60}

#: what ``python -m seqbench`` imports before it trains (timed in a process of their own)
IMPORTS = "import seqbench.__main__, seqbench.run, seqbench.tracking, lightning, mlflow, datasets"

def bare_loop(path: str, emb: int, hidden: int, layers: int, bptt: int, batch: int, lr: float, clip: float,
              limit: int, threads: int) -> None:
    """The run, written out with torch alone: read the file, map characters to ids, train one epoch
    with truncated BPTT (state carried, detached), validate once, print what was measured."""
    import math

    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    text = Path(path).read_text(encoding="utf-8")
    vocab = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = torch.tensor([vocab[c] for c in text])
    n_train, n_val = int(len(ids) * 0.9), int(len(ids) * 0.05)

    def columns(stream):  # a contiguous stream as (steps, batch) columns
        steps = len(stream) // batch
        return stream[:steps * batch].view(batch, steps).t().contiguous()

    embed, rnn, head = nn.Embedding(len(vocab), emb), nn.LSTM(emb, hidden, layers), nn.Linear(hidden, len(vocab))
    params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
    opt, loss_fn = torch.optim.SGD(params, lr=lr), nn.CrossEntropyLoss()

    def windows(data):
        for i in range(0, data.size(0) - 1, bptt):
            y = data[i + 1:i + 1 + bptt]
            yield data[i:i + len(y)], y

    data, state, tokens = columns(ids[:n_train]), None, 0
    start = time.perf_counter()
    for k, (x, y) in enumerate(windows(data)):
        if limit and k == limit:
            break
        state = tuple(s.detach() for s in state) if state is not None else None
        out, state = rnn(embed(x), state)
        loss = loss_fn(head(out).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        tokens += y.numel()
    trained = time.perf_counter() - start
    state, total, count = None, 0.0, 0
    with torch.no_grad():
        for x, y in windows(columns(ids[n_train:n_train + n_val])):
            out, state = rnn(embed(x), state)
            total += loss_fn(head(out).flatten(0, 1), y.flatten()).item() * y.numel()
            count += y.numel()
    print(f"tokens {tokens} train_s {trained:.3f} tokens_per_s {tokens / trained:.1f} "
          f"val_bits_per_char {total / count / math.log(2):.4f}")


def seqbench_command(shape: dict, impl: str, threads: int) -> list[str]:
    """The bare loop's run as ``python -m seqbench`` overrides."""
    limit = [f"trainer.limit_train_batches={shape['limit']}"] if shape.get("limit") else []
    return [sys.executable, "-m", "seqbench", "task=lm", "data=tinyshakespeare", "tokenizer=char", "model=lstm",
            f"model.impl={impl}", f"model.num_layers={shape['layers']}", f"model.hidden_size={shape['hidden']}",
            f"embedding.dim={shape['embedding']}", f"task.bptt={shape['bptt']}", f"task.batch_size={shape['batch']}",
            "optimizer=sgd", f"optimizer.lr={shape['lr']}", f"trainer.gradient_clip_val={shape['clip']}",
            "trainer.max_epochs=1", "early_stopping.patience=null", "task.probe=false", "seed=0",
            "task.generate.num_samples=1", "task.generate.max_new_tokens=100", "trainer.enable_progress_bar=false",
            f"num_threads={threads}", *limit,
            "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
            "+trainer.profiler.dirpath=${paths.root}/profile", "+trainer.profiler.filename=run"]


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    """Wall seconds of a whole process, start to exit, and its standard output."""
    start = time.perf_counter()
    p = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if p.returncode:
        raise RuntimeError(f"{' '.join(command[1:4])} ... exited {p.returncode}: {p.stderr[-2000:]}")
    return wall, p.stdout


def profiled(path: Path) -> dict[str, float]:
    """Action -> total seconds, from a ``SimpleProfiler`` report file."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"[0-9.e+-]+", cells[3]):
            out[cells[0]] = float(cells[3])
    return out


def breakdown(root: Path) -> dict[str, float]:
    """Seconds of data set-up, training, validation and test (with the sample) in one run."""
    fit, test = profiled(root / "profile" / "fit-run.txt"), profiled(root / "profile" / "test-run.txt")
    validation = sum(v for k, v in fit.items() if ("validation" in k or "val_next" in k) and "sanity" not in k)
    data = sum(v for k, v in fit.items() if k.startswith("[LightningDataModule]"))
    # one profiler serves fit and test, and each report's Total is the time since it started
    return {"data": data, "training": fit.get("run_training_epoch", 0.0) - validation, "validation": validation,
            "test": test["Total"] - fit["Total"]}


def run_seqbench(shape: dict, impl: str, threads: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wall, out = timed(seqbench_command(shape, impl, threads), root, {**env, "SEQBENCH_ROOT": tmp})
        parts = breakdown(root)
        tps = float(re.search(r"train/tokens_per_s\s*│\s*([0-9.,]+)", out).group(1).replace(",", ""))
    return {"wall": wall, "tokens_per_s": tps, **parts}


def run_bare(shape: dict, threads: int, data_file: Path, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(data_file), *(str(shape[k]) for k in ("embedding", "hidden", "layers", "bptt", "batch", "lr", "clip")),
                str(shape.get("limit", 0)), str(threads)]
        wall, out = timed([sys.executable, __file__, "--bare-loop", *args], Path(tmp), env)
    fields = dict(zip(out.split()[::2], map(float, out.split()[1::2])))
    return {"wall": wall, "tokens_per_s": fields["tokens_per_s"], "tokens": fields["tokens"], "training": fields["train_s"]}


def resume_seconds(env: dict) -> float:
    """A finished two-configuration study, started again: wall seconds of that whole process."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "finished.yaml"
        study.write_text(yaml.safe_dump({"name": "finished", "seeds": [0], "grids": [{"name": "cells", "overrides": [
            "model=rnn,gru", "data.num_train=300", "data.num_val=50", "data.num_test=50", "model.hidden_size=16",
            "embedding.dim=8", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]}]}))
        command = [sys.executable, "-m", "seqbench.sweep", str(study)]
        timed(command, Path(tmp), {**env, "SEQBENCH_ROOT": tmp})
        wall, out = timed(command, Path(tmp), {**env, "SEQBENCH_ROOT": tmp})
        if "nothing to run" not in out:
            raise RuntimeError(f"the finished study ran again: {out[-1000:]}")
    return wall


def main() -> None:
    if sys.argv[1:2] == ["--bare-loop"]:  # a bare-loop process of this benchmark
        path, *numbers = sys.argv[2:]
        emb, hidden, layers, bptt, batch, lr, clip, limit, threads = map(float, numbers)
        return bare_loop(path, int(emb), int(hidden), int(layers), int(bptt), int(batch), lr, clip, int(limit),
                         int(threads))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shape, 60 updates, one round, nothing saved")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    args = parser.parse_args()
    started = time.perf_counter()
    data_dir = Path(os.environ.get("SEQBENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    data_file = data_dir / "tinyshakespeare" / "input.txt"
    if not data_file.is_file():
        sys.exit(f"bench_run_cost: {data_file} not found; set SEQBENCH_DATA_DIR to the folder holding tinyshakespeare/")
    env = {**os.environ, "SEQBENCH_DATA_DIR": str(data_dir)}
    shape, rounds = (QUICK, 1) if args.quick else (SHAPE, args.rounds)

    import_wall = statistics.median(timed([sys.executable, "-c", IMPORTS], Path.cwd(), env)[0] for _ in range(3))
    empty_wall = statistics.median(timed([sys.executable, "-c", "pass"], Path.cwd(), env)[0] for _ in range(3))
    results: dict[str, list[dict]] = {"bare loop": [], "seqbench, fused": [], "seqbench, scratch": []}
    for r in range(rounds):
        order = list(results) if r % 2 == 0 else list(results)[::-1]
        for name in order:
            if name == "bare loop":
                res = run_bare(shape, args.threads, data_file, env)
            else:
                res = run_seqbench(shape, name.split(", ")[1], args.threads, env)
            results[name].append(res)
            print(f"round {r + 1}: {name}: {res['wall']:.1f} s, {res['tokens_per_s']:,.0f} tokens/s", flush=True)
    resume = resume_seconds(env)

    med = {name: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for name, runs in results.items()}
    bare, fused = med["bare loop"], med["seqbench, fused"]
    rows = []
    for name, m in med.items():
        rows.append([name, f"{m['wall']:.1f}", f"{m['wall'] / bare['wall']:.2f}×", f"{m['tokens_per_s']:,.0f}",
                     f"{m['tokens_per_s'] / fused['tokens_per_s']:.2f}×"])
    parts = []
    for name in ("seqbench, fused", "seqbench, scratch"):
        m = med[name]
        imports = import_wall - empty_wall
        rest = m["wall"] - imports - m["data"] - m["training"] - m["validation"] - m["test"]
        cells = [imports, m["data"], m["training"], m["validation"], m["test"], rest]
        parts.append([name, *(f"{c:.1f} ({c / m['wall']:.0%})" for c in cells), f"{m['wall']:.1f}"])
    goal = fused["wall"] / bare["wall"]
    scratch = med["seqbench, scratch"]["tokens_per_s"] / fused["tokens_per_s"]
    text = "\n".join([
        *report_head("The cost of a run: seqbench against a bare PyTorch loop",
                     "python benchmarks/bench_run_cost.py" + (" --quick" if args.quick else ""), started,
                     machine_info("cpu")),
        f"Shape: embedding {shape['embedding']}, {shape['layers']} x {shape['hidden']} LSTM, bptt {shape['bptt']}, "
        f"batch {shape['batch']}, SGD lr {shape['lr']}, clip {shape['clip']}, one epoch of Tiny Shakespeare "
        f"({bare['tokens']:,.0f} training tokens in the bare loop), {args.threads} torch threads a run, median of "
        f"{rounds} round(s). Protocol: the docstring of `benchmarks/bench_run_cost.py`.", "",
        markdown_table(["row", "wall s (whole process)", "vs bare loop", "training tokens/s", "vs fused"], rows), "",
        "Where the seqbench run's wall time goes (seconds, share of its wall):", "",
        markdown_table(["row", "imports", "data", "training", "validation", "test", "the rest", "wall s"],
                       parts), "",
        f"Where seqbench (fused) spends more than the bare loop ({fused['wall'] - bare['wall']:.1f} s): imports "
        f"{import_wall - empty_wall:.1f} s (the bare loop imports torch alone), a training epoch "
        f"{fused['training'] - bare['training']:+.1f} s ({fused['training']:.1f} against {bare['training']:.1f} s: "
        f"Lightning's loop, per-step metrics and gradient norms, MLflow logging every 10 steps), data "
        f"{fused['data']:.1f} s, test {fused['test']:.1f} s (the bare loop does not test), the rest as above.", "",
        f"Goals (issue 36): seqbench's wall ≤ 1.10× the bare loop's: {goal:.2f}× "
        f"({'met' if goal <= 1.10 else f'missed by {goal - 1.10:.2f}'}); `model.impl=scratch` ≥ 0.9× fused "
        f"tokens/s: {scratch:.2f}× ({'met' if scratch >= 0.9 else f'missed by {0.9 - scratch:.2f}'}).", "",
        f"Resume of a finished study (2 configurations, `python -m seqbench.sweep`, whole process): "
        f"{resume:.1f} s (goal ≤ 5 s: {'met' if resume <= 5 else 'missed'}).", ""])
    save_report(text, "run-cost-cpu.md", not args.quick)


if __name__ == "__main__":
    main()
