"""The sweep driver's scheduling: one multirun at a time with every job against several at once.

``make sweep`` runs a stage's Hydra multiruns with the local (joblib) launcher either one after
another, each spreading its jobs over all job slots, or ``jobs`` of them at once, each running its
jobs one after another (``seqbench.sweep.concurrent_multiruns`` chooses: lanes unless one multirun
holds more than a lane's share of the stage's expected work). This benchmark runs the same multirun command lines
(``seqbench.sweep.sweep_commands``, real ``python -m seqbench -m ...`` processes, each tracked in its
own MLflow store) under both schedules, in alternating order, and reports wall time, how busy the
cores were, and the ratio, measured in one run. Three stages are timed:

* many small grids (the shape of the modern, long_range and tokenizers studies' stages), where a
  multirun's start-up and its last lone job leave cores idle one at a time;
* a few grids of equal work;
* one dominant grid with the fewest jobs (the cells study's comparison), where one lane would hold
  the long grid alone: job counts say several at once, durations say one at a time.

``python benchmarks/bench_sweep.py`` writes ``benchmarks/results/sweep-cpu.md``; ``--quick`` is a
smaller, unsaved check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import busy_core_seconds, machine_info, markdown_table, report_head, save_report

from seqbench.launch import run_multiruns, start_forkserver
from seqbench.study import expand, expected_runs, sweeps
from seqbench.sweep import concurrent_multiruns, sweep_commands
from seqbench.tracking import Tracker

#: every job: LM on the embedded synthetic corpus (offline), a few seconds of training each
COMMON = ["trainer.enable_progress_bar=false", "data.num_train=600", "data.num_val=100", "data.num_test=100",
          "embedding.dim=16", "task.batch_size=8", "task.eval_batch_size=8", "task.bptt=32",
          "task.generate.max_new_tokens=20"]
MODELS = ["rnn", "gru", "lstm", "cifg", "mingru", "minlstm", "indrnn", "peephole"]
#: the stage also timed with each multirun a new interpreter: the most multiruns, so the most start-ups
FRESH_STAGE = "many small grids"


def stages(quick: bool) -> dict[str, dict]:
    """The benchmark stages as study dicts (``pipelines/*.yaml`` form), grids largest first as
    ``seqbench.sweep.run_stage`` orders them for lanes."""
    short = ["model.hidden_size=32", f"trainer.max_epochs={1 if quick else 3}"]
    many = MODELS[:5] if quick else MODELS
    return {
        # the modern, long_range and tokenizers studies' stages: many grids of a few short jobs
        "many small grids": {"name": "bench_many", "seeds": [0, 1], "common": COMMON,
                             "grids": [{"name": m, "overrides": [f"model={m}", *short]} for m in many]},
        # a few grids of equal work
        "few equal grids": {"name": "bench_few", "seeds": [0, 1], "common": COMMON, "grids": [
            {"name": " and ".join(pair), "overrides": [f"model={','.join(pair)}", *short]}
            for pair in (MODELS[0:2], MODELS[2:4], MODELS[4:6])]},
        # the cells study's comparison: the grid of a few long jobs holds most of the work, not most jobs
        "one dominant grid": {"name": "bench_dominant", "seeds": [0, 1], "common": COMMON, "grids": [
            {"name": "short", "overrides": ["model=rnn,gru", *short]},
            {"name": "short too", "overrides": ["model=lstm,cifg", *short]},
            {"name": "long", "overrides": ["model=lstm", "model.hidden_size=128",
                                           f"trainer.max_epochs={4 if quick else 40}"]}]},
    }


def finished_durations(root: Path, study: str) -> dict[str, float]:
    """config_hash -> wall seconds of the stage's FINISHED run in this root's store, read as the
    sweep driver reads them (``Tracker.finished_durations``; one run per configuration here)."""
    by_hash, _ = Tracker(f"sqlite:///{root}/mlflow.db", f"seqbench/{study}").finished_durations()
    return {config: seconds[-1] for config, seconds in by_hash.items()}


def run_schedule(study: dict, lanes: int, jobs: int, fresh: bool = False) -> dict:
    """One stage under one schedule in a fresh project root (its own MLflow store, so no job is
    skipped as already done); each multirun a fork of the driver's preloaded forkserver (as
    ``make sweep`` starts them), or with ``fresh`` a new interpreter (``subprocess.Popen``, as it
    did before). Returns wall seconds, busy core fraction and the FINISHED runs' durations by
    config hash; raises unless every job FINISHED."""
    import subprocess

    import seqbench.launch

    commands = sweep_commands(study, sweeps(study), "local", jobs, lanes=lanes)
    forked = seqbench.launch.start
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        root = Path(tmp)
        os.environ["SEQBENCH_ROOT"] = str(root)
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            os.environ.pop(key, None)
        os.chdir(root)
        log = open(root / "jobs.log", "w")
        sys.stdout.flush(), sys.stderr.flush()
        out, err = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)   # the jobs' output, not the table's
        try:
            seqbench.launch.start = subprocess.Popen if fresh else forked
            busy, start = busy_core_seconds(), time.perf_counter()
            signum = run_multiruns(commands, lanes)
            wall = time.perf_counter() - start
            busy = busy_core_seconds() - busy
        finally:
            seqbench.launch.start = forked
            os.dup2(out, 1), os.dup2(err, 2)
            os.close(out), os.close(err)
            log.close()
            os.chdir(saved_cwd)
            os.environ.clear(), os.environ.update(saved_env)
        durations = finished_durations(root, study["name"])
        finished, expected = len(durations), sum(len(expand(s.overrides)) for s in sweeps(study))
        if signum is not None or finished != expected:
            tail = (root / "jobs.log").read_text()[-3000:]
            raise RuntimeError(f"{study['name']} with {lanes} lane(s): {finished}/{expected} runs FINISHED"
                               f" (signal {signum}); the jobs' output ended:\n{tail}")
    return {"wall": wall, "busy": busy / (wall * (os.cpu_count() or 1)), "durations": durations}


def driver_choices(study: dict, durations: dict[str, float], jobs: int) -> tuple[int, int, float, float]:
    """The lanes ``concurrent_multiruns`` picks for the stage from the durations of its runs (as
    the driver does once earlier runs are in MLflow) and from job counts (as it does without), and
    the largest multirun's share of the stage's jobs and of its measured work."""
    expected = expected_runs(study, tempfile.gettempdir())
    n = len(sweeps(study))
    jobs_of, work_of = [0] * n, [0.0] * n
    for e in expected:
        jobs_of[e.sweep] += 1
        work_of[e.sweep] += durations[e.hash]
    return (concurrent_multiruns("local", jobs, work_of), concurrent_multiruns("local", jobs, jobs_of),
            max(jobs_of) / sum(jobs_of), max(work_of) / sum(work_of))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller stages, one round, nothing saved")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stages", nargs="*", default=None, help="a subset of the stages, by name")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="job slots (make sweep's --jobs)")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    t0 = time.perf_counter()
    results: dict[tuple[str, int, bool], list[dict]] = {}
    chosen = {k: v for k, v in stages(args.quick).items() if not args.stages or k in args.stages}
    start_forkserver()  # as make sweep does, before its checks
    for name, study in chosen.items():
        # (lanes, fresh interpreters): the many small grids also with each multirun a new interpreter
        schedules = [(1, False), (args.jobs, False)] + ([(args.jobs, True)] if name == FRESH_STAGE else [])
        for r in range(rounds):                  # alternate which schedule goes first
            for lanes, fresh in schedules[::-1] if r % 2 else schedules:
                res = run_schedule(study, lanes, args.jobs, fresh)
                results.setdefault((name, lanes, fresh), []).append(res)
                print(f"{name}: {lanes} at a time{', fresh interpreters' if fresh else ''}: {res['wall']:.1f} s, "
                      f"cores {100 * res['busy']:.0f} % busy", file=sys.stderr, flush=True)
    rows = []
    for name, study in chosen.items():
        n_sweeps, n_jobs = len(sweeps(study)), sum(len(expand(s.overrides)) for s in sweeps(study))
        rule, by_counts, job_share, work_share = driver_choices(
            study, results[(name, 1, False)][0]["durations"], args.jobs)
        base = statistics.median(r["wall"] for r in results[(name, 1, False)])
        for lanes, fresh in [key[1:] for key in results if key[0] == name]:
            rs = results[(name, lanes, fresh)]
            wall = statistics.median(r["wall"] for r in rs)
            how = (f"one multirun at a time, {args.jobs} jobs each" if lanes == 1
                   else f"{lanes} multiruns at a time, 1 job each")
            if fresh:
                how += ", each multirun a new interpreter (not forked)"
            rows.append([name, f"{n_sweeps} multiruns, {n_jobs} jobs; largest share of the jobs "
                               f"{100 * job_share:.0f} %, of the work {100 * work_share:.0f} %",
                         how, "yes" if lanes == rule and not fresh else "", "yes" if lanes == by_counts and not fresh else "",
                         f"{wall:.1f}", " ".join(f"{r['wall']:.1f}" for r in rs),
                         f"{100 * statistics.median(r['busy'] for r in rs):.0f} %", f"{base / wall:.2f}"])
    info = {k: v for k, v in machine_info("cpu").items() if k != "torch threads (intra-op)"}
    lines = [*report_head("Sweep scheduling: one multirun at a time vs several at once (cpu)",
                          f"python benchmarks/bench_sweep.py --rounds {rounds}{' --quick' if args.quick else ''}",
                          t0, info),
             "## Protocol", "",
             "* Each stage is a list of Hydra multiruns of real `python -m seqbench` jobs (char LM on the embedded "
             "synthetic corpus, seeds 0 and 1), the command lines `make sweep` builds "
             "(`seqbench.sweep.sweep_commands`, local joblib launcher), run by the driver's own "
             "`seqbench.launch.run_multiruns` under each schedule, each time in a fresh project root with its own "
             "MLflow store (nothing skipped as already done); every run FINISHED is checked.",
             f"* Schedules: one multirun at a time with `hydra.launcher.n_jobs={args.jobs}`, or {args.jobs} "
             f"multiruns at once with `n_jobs=1` each, grids largest first; `num_threads` = cores / jobs in both.",
             "* Start-up: each multirun is a fork of the driver's forkserver, which imported torch, Lightning, "
             "MLflow, Hydra and datasets once (`seqbench.launch.ForkedSeqbench`, as `make sweep` starts them); "
             f"the '{FRESH_STAGE}' stage also runs {args.jobs} at a time with each multirun a new interpreter "
             "(`subprocess.Popen`, as the driver started them before), in the same rounds.",
             f"* {rounds} round(s), the schedules in alternating order; reported: median wall time, every "
             "round's, the share of the machine's core time that was busy (`/proc/stat`, everything on the "
             "machine: run alone), and the speed-up over one multirun at a time (median wall times of this run).",
             "* `driver's choice`: the schedule `seqbench.sweep.concurrent_multiruns` picks for the stage: "
             "several at once unless one multirun holds more than a lane's share of the stage's expected work. "
             "`by durations`: the work as the summed wall times of each multirun's runs (the first round one "
             "multirun at a time), as the driver has it once earlier runs of the same configurations, or of "
             "the same task, data and model, are in MLflow; `by job counts`: as it has it without. "
             "`largest share`: the largest share of the stage's jobs one multirun holds, and of its work.", "",
             "## Results", "",
             markdown_table(["stage", "size", "schedule", "driver's choice by durations", "by job counts", "wall s (median)", "wall s (rounds)",
                             "cores busy", "speed-up"], rows), ""]
    save_report("\n".join(lines), "sweep-cpu.md", save=not args.quick and not args.stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
