"""GPU check: what seqbench does on one CUDA machine, in under 10 minutes, written to one file.

    python benchmarks/gpu_check.py                  # -> benchmarks/results/gpu-check.md
    python benchmarks/gpu_check.py --out $OUT/gpu-check.md

It runs, each as a user types it and each with its own time limit:
1. ``python -m seqbench trainer=gpu`` on the default task (a short budget): the run must end
   FINISHED in MLflow; its test bits/char, tokens/s and wall time are recorded;
2. ``python -m seqbench trainer=ddp`` on every GPU present (NCCL): one MLflow run (rank 0);
3. ``benchmarks/bench_cells.py`` on CUDA (both sizes, every cell, against cuDNN's LSTM);
4. a tuned two-cell study (``python -m seqbench.sweep <tiny study> trainer=gpu``): tuning,
   choice and comparison runs, the parent run FINISHED.
Each step's command, exit status, wall time and figures go into a markdown table; a failing step
is recorded with the last lines it printed, and the others still run. Needs no GPU to import
(the tests never run it); on a machine without CUDA it says so and exits 2.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BUDGET = ["trainer.max_epochs=2", "data.num_train=3000", "trainer.enable_progress_bar=false"]
#: a tuned study small enough for a minute: two cells, two learning rates, two seeds, copy memory
STUDY = {
    "name": "gpu_check",
    "description": "GPU check: rnn and gru on copy memory (delay 10), lr tuned, 2 seeds.",
    "seeds": [0, 1],
    "tuning": {"seed": 100, "overrides": ["trainer.max_epochs=2"]},
    "common": ["trainer.enable_progress_bar=false", "early_stopping.patience=2"],
    "grids": [{"name": "copy memory, delay 10",
               "overrides": ["task=copy", "data=copy", "data.delay=10", "data.copy_length=5", "model=rnn,gru",
                             "model.param_budget=20000", "embedding.dim=16", "data.num_train=4000",
                             "data.num_val=500", "data.num_test=500", "trainer.max_epochs=4"],
               "tune": {"optimizer.lr": [0.003, 0.01]}}],
}


def sh(args: list[str], root: Path, timeout: int) -> tuple[int, float, str]:
    """Run one command in ``root`` (its own MLflow store); return exit code, wall seconds, output tail."""
    env = {**os.environ, "SEQBENCH_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    try:
        p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    return code, time.perf_counter() - start, "\n".join(out.strip().splitlines()[-8:])


def runs(root: Path, experiment: str = "seqbench") -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def one_run(name: str, overrides: list[str], work: Path, timeout: int) -> dict:
    root = work / name
    root.mkdir()
    args = [PY, "-m", "seqbench", *overrides, *BUDGET]
    code, wall, tail = sh(args, root, timeout)
    found = runs(root)
    figures = ""
    if len(found) == 1:
        m = found[0].data.metrics
        figures = (f"{len(found)} run {found[0].info.status}; test bits/char {m.get('test/bits_per_char', float('nan')):.3f}; "
                   f"{m.get('train/tokens_per_s', float('nan')):,.0f} tokens/s; devices {found[0].data.params.get('trainer.devices')}")
    else:
        figures = f"{len(found)} MLflow runs (expected 1)"
    ok = code == 0 and len(found) == 1 and found[0].info.status == "FINISHED"
    return {"check": name, "command": " ".join(["python -m seqbench", *overrides, *BUDGET]), "ok": ok,
            "code": code, "wall": wall, "figures": figures, "tail": "" if ok else tail}


def cells_benchmark(work: Path, out_md: Path, timeout: int) -> dict:
    args = [PY, "benchmarks/bench_cells.py", "--repeats", "5", "--out", str(out_md)]
    code, wall, tail = sh(args, work, timeout)
    ok = code == 0 and out_md.is_file()
    return {"check": "cell benchmark on CUDA", "command": " ".join(["python", *args[1:]]), "ok": ok, "code": code,
            "wall": wall, "figures": f"table: {out_md.name}" if ok else "", "tail": "" if ok else tail}


def study(work: Path, timeout: int) -> dict:
    root = work / "study"
    root.mkdir()
    path = root / "gpu_check.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    args = [PY, "-m", "seqbench.sweep", str(path), "--jobs", "1", "trainer=gpu"]
    code, wall, tail = sh(args, root, timeout)
    found = runs(root, "seqbench/gpu_check")
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    finished = sum(r.info.status == "FINISHED" for r in children)
    ok = code == 0 and len(parents) == 1 and parents[0].info.status == "FINISHED" and finished == len(children) > 0
    figures = f"{len(children)} child runs ({finished} FINISHED), parent {parents[0].info.status if parents else 'missing'}"
    return {"check": "tuned study with trainer=gpu", "command": f"python -m seqbench.sweep <{STUDY['name']}.yaml> --jobs 1 trainer=gpu",
            "ok": ok, "code": code, "wall": wall, "figures": figures, "tail": "" if ok else tail}


def report(results: list[dict], started: float) -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    lines = ["# GPU check", "",
             f"`python benchmarks/gpu_check.py` · code {sha or '?'} · {gpus} · torch {torch.__version__} "
             f"(CUDA {torch.version.cuda}) · {platform.node()} · "
             f"{datetime.now(timezone.utc):%Y-%m-%d} · {(time.perf_counter() - started) / 60:.1f} min", "",
             "| check | command | result | exit | wall s | figures |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['check']} | `{r['command']}` | {'pass' if r['ok'] else 'FAIL'} | {r['code']} | "
                     f"{r['wall']:.0f} | {r['figures']} |")
    for r in results:
        if r["tail"]:
            lines += ["", f"## {r['check']}: last lines", "", "```", r["tail"], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu-check.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_check: error: no CUDA device (torch {torch.__version__}); run it on a GPU machine",
              file=sys.stderr)
        sys.exit(2)
    started = time.perf_counter()
    n = torch.cuda.device_count()
    with tempfile.TemporaryDirectory(prefix="seqbench-gpu-check-") as tmp:
        work = Path(tmp)
        results = [one_run("trainer=gpu", ["trainer=gpu"], work, 150),
                   one_run(f"trainer=ddp on {n} GPU(s)", ["trainer=ddp", f"trainer.devices={n}"], work, 150),
                   study(work, 150),
                   cells_benchmark(work, args.out.with_name("cells-cuda.md"), 180)]
    text = report(results, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
