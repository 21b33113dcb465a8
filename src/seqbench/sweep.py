"""``python -m seqbench.sweep <study>``: run a study from ``pipelines/<study>.yaml``.

A study is a list of grids (Hydra multirun sweeps) with shared overrides and seeds. Each grid runs
as ``python -m seqbench -m <grid> seed=<seeds> <common> study=<name> skip_finished=true`` with a
Hydra launcher (``local``: joblib processes; ``slurm``: submitit; ``basic``: one after another).
Resumable: a job whose config hash already has a FINISHED run is skipped, so re-running a killed
sweep finishes only what is missing. A failing job is recorded FAILED and the others go on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from seqbench.errors import SeqbenchError, choice_error
from seqbench.study import load_study, studies

LAUNCHERS = ("local", "slurm", "basic")


def grid_commands(study: dict, launcher: str = "local", jobs: int | None = None,
                  extra: list[str] = ()) -> list[list[str]]:
    """The multirun command line of every grid of the study."""
    if launcher not in LAUNCHERS:
        raise choice_error("launcher", launcher, LAUNCHERS)
    seeds = ",".join(str(s) for s in study.get("seeds", [0]))
    cores = os.cpu_count() or 1
    jobs = jobs or cores
    commands = []
    for grid in study["grids"]:
        cmd = [sys.executable, "-m", "seqbench", "-m", *grid["overrides"], f"seed={seeds}",
               *study.get("common", []), f"study={study['name']}", "skip_finished=true"]
        if launcher == "local":
            cmd += ["hydra/launcher=local", f"hydra.launcher.n_jobs={jobs}",
                    f"num_threads={max(1, cores // jobs)}"]
        elif launcher == "slurm":
            cmd += ["hydra/launcher=slurm"]
        commands.append([*cmd, *extra])
    return commands


def prepare_store(extra: list[str]) -> None:
    """Create the MLflow database and experiment once, before jobs fan out: parallel first
    writers to a fresh sqlite store race in MLflow's schema migration."""
    from hydra import compose, initialize_config_dir

    from seqbench.tracking import Tracker
    from seqbench.validate import CONF_DIR

    overrides = [o for o in extra if o.startswith(("logger", "paths"))]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={os.environ.get('SEQBENCH_ROOT', os.getcwd())}",
                                           *overrides])
    if cfg.logger.name == "mlflow":
        from omegaconf import OmegaConf
        Tracker(**OmegaConf.to_container(cfg.logger, resolve=True))


def decode_study(study: dict, extra: list[str] = ()) -> int:
    """A ``kind: decoding`` study: every strategy on each FINISHED LM run of ``source_study``
    (no retraining). Resumable: a source run that already has a FINISHED decode run is skipped."""
    import mlflow
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from seqbench.compare_decoding import compare
    from seqbench.tracking import Tracker
    from seqbench.validate import CONF_DIR

    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    tracking = [o for o in extra if o.startswith(("logger", "paths"))]
    base = [f"paths.root={root}", *tracking, f"study={study['name']}", *study.get("common", []),
            *[o for o in extra if o not in tracking]]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("compare_decoding", overrides=base)
        tracker = Tracker(**OmegaConf.to_container(cfg.logger, resolve=True))
        sources = mlflow.search_runs([tracker.experiment_id], filter_string=(
            f"tags.study = '{study['source_study']}' and tags.task = 'lm' and attributes.status = 'FINISHED'"))
        done = mlflow.search_runs([tracker.experiment_id], filter_string=(
            f"tags.study = '{study['name']}' and tags.task = 'decode' and attributes.status = 'FINISHED'"))
        decoded = set(done["tags.parent_run_id"]) if len(done) else set()
        if not len(sources):
            print(f"seqbench.sweep: error: no FINISHED lm runs in study {study['source_study']!r}; "
                  f"run `make sweep STUDY={study['source_study']}` first", file=sys.stderr)
            return 1
        failed = 0
        for run_id, name in zip(sources["run_id"], sources["tags.mlflow.runName"]):
            if run_id in decoded:
                print(f"skipped: {name} already decoded")
                continue
            try:
                compare(compose("compare_decoding", overrides=[*base, f"run_id={run_id}"]))
            except Exception as e:  # recorded FAILED by compare; the other runs go on
                print(f"seqbench.sweep: decoding {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
                failed += 1
    print(f"== {study['name']}: {len(sources) - failed}/{len(sources)} source runs decoded; "
          f"report: python -m seqbench.report {study['name']}")
    return 1 if failed else 0


def preflight(study: dict, root: str, extra: list[str]) -> list:
    """Validate every expected configuration and load each distinct dataset once, before any job
    starts: a bad value or a missing corpus is one error line, not one per job."""
    from omegaconf import OmegaConf

    from seqbench.errors import instantiate
    from seqbench.study import expected_runs
    from seqbench.validate import validate

    expected = expected_runs(study, root, extra)
    loaded = set()
    for e in expected:
        validate(e.cfg)
        key = OmegaConf.to_yaml(e.cfg.data)
        if key not in loaded:
            instantiate(e.cfg.data)()  # DataError (one line) when neither a local copy nor the hub has it
            loaded.add(key)
    return expected


def run_grid(cmd: list[str]) -> int | None:
    """Run one grid's multirun; on SIGTERM/SIGINT pass the signal to it (it records its runs in
    flight as KILLED and exits) instead of killing it, and return the signal (else None)."""
    import signal

    received: list[int] = []
    proc = subprocess.Popen(cmd)

    def forward(signum, frame):
        if not received:
            received.append(signum)
            proc.send_signal(signum)  # again, if the whole process group got it: its handler ignores repeats

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0] if received else None


def summarize(study: dict, expected: list, extra: list[str]) -> int:
    """Count the study's configurations by their MLflow status; list those without a FINISHED run."""
    from seqbench.report import fetch_runs, problems, tracker_for

    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    tracker = tracker_for(root, [o for o in extra if o.startswith(("logger", "paths"))])
    not_done = problems(expected, fetch_runs(tracker, [e.hash for e in expected], study["name"]))
    for name, status, run_id, reason in not_done:
        print(f"  {status}: {name} {run_id} {reason}".rstrip())
    missing = sum(status == "MISSING" for _, status, _, _ in not_done)
    print(f"== {study['name']}: {len(expected) - len(not_done)}/{len(expected)} configurations FINISHED, "
          f"{len(not_done) - missing} failed, {missing} missing; report: make report STUDY={study['name']}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqbench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("study", help=f"one of: {', '.join(studies())}")
    parser.add_argument("--launcher", default="local", help=f"one of: {', '.join(LAUNCHERS)}")
    parser.add_argument("--jobs", type=int, default=None, help="parallel jobs (local launcher)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_intermixed_args(argv)
    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    tracking = [o for o in args.overrides if o.startswith(("logger", "paths"))]
    try:
        study = load_study(args.study)
        if study.get("kind") == "decoding":
            return decode_study(study, args.overrides)
        commands = grid_commands(study, args.launcher, args.jobs, args.overrides)
        if args.dry_run:
            print("\n".join(" ".join(c[1:]) for c in commands))
            return 0
        expected = preflight(study, root, [o for o in args.overrides if o not in tracking])
    except SeqbenchError as e:
        print(f"seqbench.sweep: error: {e}", file=sys.stderr)
        return 2
    prepare_store(args.overrides)
    print(f"== {study['name']}: {len(expected)} configurations in {len(commands)} grid(s)", flush=True)
    for grid, cmd in zip(study["grids"], commands):
        print(f"== {study['name']}: {grid.get('name', '')}", flush=True)
        # a failing job is recorded FAILED by the job itself; the grid goes on
        if (signum := run_grid(cmd)) is not None:
            print(f"== {study['name']}: stopped by signal {signum}; runs in flight are recorded KILLED. "
                  f"Run the same command again to finish what is missing.", file=sys.stderr)
            return 128 + signum
    if args.launcher == "slurm":  # submitit returns when the jobs are queued or done; nothing to count yet
        return 0
    # exit 1 only when a configuration left no record at all; FAILED runs are results, listed here
    return 1 if summarize(study, expected, args.overrides) else 0


if __name__ == "__main__":
    sys.exit(main())
