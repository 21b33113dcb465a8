"""``python -m seqbench.sweep <study>``: run a study from ``pipelines/<study>.yaml``.

A study is a list of grids (Hydra multirun sweeps) with shared overrides and seeds. Each grid runs
as ``python -m seqbench -m <grid> seed=<seeds> <common> study=<name> skip_finished=true`` with a
Hydra launcher (``local``: joblib processes, one per core; ``slurm``: submitit; ``submitit_local``:
submitit's local executor, the SLURM code path without a cluster; ``basic``: one after another),
one multirun at a time. A study with tuned grids (``tune:``) queues its tuning multiruns and the
comparison of the grids that tune nothing; each tuned grid's comparison, at the settings chosen
from its tuning runs, joins the queue as soon as that grid's tuning multirun has ended (Hydra's
submitit launcher returns when its jobs have ended, so on SLURM too). The study is one
place in MLflow: its own experiment (``seqbench/<study>``) with one parent run, the jobs nested
under it, and the report logged on it.
Resumable: a job whose config hash already has a FINISHED run of the same code (``code_version``)
is skipped, and a grid whose every job would be skipped is not launched, so re-running a killed
sweep finishes only what is missing. A failing job is recorded FAILED and the others go on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from seqbench.errors import SeqbenchError, choice_error
from seqbench.launch import run_multiruns
from seqbench.resume import finished_before, fingerprint, record_finished
from seqbench.study import (Sweep, expand, expected_runs, load_study, point_key, resolve, studies, study_tracker,
                            sweeps)

#: local: joblib processes; slurm: submitit on a SLURM cluster; submitit_local: the same submitit code
#: path with jobs as local processes (tests, or a machine without SLURM); basic: one after another
LAUNCHERS = ("local", "slurm", "submitit_local", "basic")


@dataclass
class Multirun:
    """One multirun of a study: its sweep, the configurations it runs, and the multiruns that wait
    for it (``unlocks()``, called once it has ended: a tuned grid's comparison at the settings its
    tuning runs chose)."""

    sweep: Sweep
    expected: list
    unlocks: Callable[[], list["Multirun"]] | None = None
    pending: list = field(default_factory=list)  #: the configurations without a reusable FINISHED run


def sweep_commands(study: dict, stage_sweeps: list, launcher: str = "local", jobs: int | None = None,
                   extra: list[str] = (), first: int = 0) -> list[list[str]]:
    """The multirun command line of each sweep of a stage (:func:`seqbench.study.sweeps`), run one
    at a time: the local launcher runs ``jobs`` (default: every core) jobs in parallel, with
    ``num_threads`` so that jobs x threads <= cores. ``first``: the number of the first one (each
    has its own sweep directory)."""
    if launcher not in LAUNCHERS:
        raise choice_error("launcher", launcher, LAUNCHERS)
    cores = os.cpu_count() or 1
    jobs = jobs or cores
    commands = []
    for k, s in enumerate(stage_sweeps, start=first):
        cmd = [sys.executable, "-m", "seqbench", "-m", *s.overrides, f"study={study['name']}", "skip_finished=true"]
        if launcher == "local":
            # conf/config.yaml's sweep dir made distinct: multiruns started in the same second would share it
            cmd += ["hydra/launcher=local", f"hydra.launcher.n_jobs={jobs}",
                    f"num_threads={max(1, cores // jobs)}",
                    f"hydra.sweep.dir=${{paths.output_dir}}/multirun/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}}_{study['name']}_{k}"]
        elif launcher == "slurm":
            cmd += ["hydra/launcher=slurm"]
        elif launcher == "submitit_local":  # every job of a multirun starts at once: share the cores
            cmd += ["hydra/launcher=submitit_local", f"num_threads={max(1, cores // min(jobs, len(expand(s.overrides))))}"]
        commands.append([*cmd, *extra])
    return commands


def grid_commands(study: dict, launcher: str = "local", jobs: int | None = None,
                  extra: list[str] = ()) -> list[list[str]]:
    """The comparison stage's multirun command lines (tuned grids: at their first candidates,
    until the tune stage has chosen)."""
    return sweep_commands(study, sweeps(study), launcher, jobs, extra)


def open_study_run(study: dict, extra: list[str] = ()):
    """The study's tracker (experiment ``<experiment>/<study>``) and its parent run, marked RUNNING.

    Created here, once, before jobs fan out: parallel first writers to a fresh sqlite store race in
    MLflow's schema migration. Returns (None, None) with ``logger=none``."""
    import yaml

    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    tracker = study_tracker(root, study["name"], [o for o in extra if o.startswith(("logger", "paths"))])
    if tracker is None:
        return None, None
    parent = tracker.study_run(study["name"], study.get("description", ""))
    tracker.client.update_run(parent, status="RUNNING")
    tracker.client.log_text(parent, yaml.safe_dump(study, sort_keys=False), "study.yaml")
    return tracker, parent


def close_study_run(tracker, parent: str | None, status: str, counts: dict[str, int] | None = None,
                    reason: str | None = None) -> None:
    """End the parent run with the sweep's outcome, the study's configuration counts and, when the
    sweep itself failed, the reason (tag ``failure_reason``, as on a failed job's run)."""
    if parent is None:
        return
    if counts:
        tracker.log_metrics({f"configurations_{k}": v for k, v in counts.items()}, run_id=parent)
    if reason:
        tracker.client.set_tag(parent, "failure_reason", reason)
    tracker.client.set_terminated(parent, status)


def decode_study(study: dict, extra: list[str] = ()) -> int:
    """A ``kind: decoding`` study: every strategy on each FINISHED LM run of ``source_study``
    (no retraining), each decode run nested under this study's parent run. Resumable: a source
    run that already has a FINISHED decode run is skipped."""
    import mlflow
    from hydra import compose, initialize_config_dir

    from seqbench.compare_decoding import compare
    from seqbench.validate import CONF_DIR

    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    tracking = [o for o in extra if o.startswith(("logger", "paths"))]
    tracker, parent = open_study_run(study, extra)
    if tracker is None:
        print("seqbench.sweep: error: a decoding study reads its source runs from MLflow; logger=none has none",
              file=sys.stderr)
        return 2
    base = [f"paths.root={root}", *tracking, f"study={study['name']}", f"logger.parent_run_id={parent}",
            *study.get("common", []), *[o for o in extra if o not in tracking]]
    source = study_tracker(root, study["source_study"], tracking)  # the trained runs' experiment
    sources = mlflow.search_runs([source.experiment_id], filter_string=(
        f"tags.study = '{study['source_study']}' and tags.task = 'lm' and attributes.status = 'FINISHED'"))
    if not len(sources):
        print(f"seqbench.sweep: error: no FINISHED lm runs in study {study['source_study']!r}; "
              f"run `make sweep STUDY={study['source_study']}` first", file=sys.stderr)
        close_study_run(tracker, parent, "FAILED")
        return 1
    done = mlflow.search_runs([tracker.experiment_id], filter_string=(
        f"tags.study = '{study['name']}' and tags.task = 'decode' and attributes.status = 'FINISHED'"))
    decoded = set(done["tags.source_run_id"]) if len(done) else set()
    failed = 0
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for run_id, name in zip(sources["run_id"], sources["tags.mlflow.runName"]):
            if run_id in decoded:
                print(f"skipped: {name} already decoded")
                continue
            try:
                compare(compose("compare_decoding", overrides=[*base, f"run_id={run_id}"]))
            except Exception as e:  # recorded FAILED by compare; the other runs go on
                print(f"seqbench.sweep: decoding {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
                failed += 1
    close_study_run(tracker, parent, "FINISHED",
                    {"finished": len(sources) - failed, "failed": failed, "missing": 0})
    print(f"== {study['name']}: {len(sources) - failed}/{len(sources)} source runs decoded; "
          f"report: python -m seqbench.report {study['name']}")
    return 1 if failed else 0


def preflight(study: dict, root: str, extra: list[str], stage: str = "compare") -> list:
    """Validate every expected configuration of a stage and load each distinct dataset once, before
    any job starts: a bad value or a missing corpus is one error line, not one per job. (A tuned
    grid's comparison is checked at its first candidates; the tune stage checks every candidate.)
    A grid point is validated once; at its other seeds only the run's own keys (the seed) are."""
    from omegaconf import OmegaConf

    from seqbench.errors import instantiate
    from seqbench.validate import check_run, validate

    expected = expected_runs(study, root, extra, stage=stage)
    loaded, checked = set(), set()
    for e in expected:
        point = tuple(o for o in e.overrides if not o.startswith("seed="))
        if point in checked:  # the same configuration at another seed: only the seed is new
            check_run(e.cfg)
        else:
            validate(e.cfg)
            checked.add(point)
        key = OmegaConf.to_yaml(e.cfg.data)
        if key not in loaded:
            instantiate(e.cfg.data)()  # DataError (one line) when neither a local copy nor the hub has it
            loaded.add(key)
    return expected


def close_orphans(tracker, parent: str | None, since_ms: int, signum: int) -> list[str]:
    """After a multirun stopped by ``signum`` has exited, end as KILLED every child of the study's
    parent started since ``since_ms`` that is still RUNNING: no job of this sweep is in flight any
    more, so such a run's worker was shut down (joblib/loky) before it could record its end. The
    reason says so. Returns their run ids."""
    from seqbench.errors import Terminated

    if parent is None:
        return []
    children = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")
    orphans = [r.info.run_id for r in children if r.info.start_time >= since_ms]
    reason = (f"{Terminated(signum)}: the job's worker was shut down before it recorded its end "
              f"(recorded by the sweep after the multirun exited)")
    for run_id in orphans:
        tracker.client.set_tag(run_id, "failure_reason", reason)
        tracker.client.set_terminated(run_id, "KILLED")
    return orphans


def summarize(study: dict, expected: list, tracker) -> dict[str, int]:
    """Count the study's configurations by their MLflow status; list those without a FINISHED run."""
    from seqbench.report import fetch_runs, problems

    not_done = problems(expected, fetch_runs(tracker, [e.hash for e in expected], study["name"]))
    for name, status, run_id, reason in not_done:
        print(f"  {status}: {name} {run_id} {reason}".rstrip())
    missing = sum(status == "MISSING" for _, status, _, _ in not_done)
    counts = {"expected": len(expected), "finished": len(expected) - len(not_done),
              "failed": len(not_done) - missing, "missing": missing}
    print(f"== {study['name']}: {counts['finished']}/{len(expected)} configurations FINISHED, "
          f"{counts['failed']} failed, {missing} missing; report: make report STUDY={study['name']}")
    return counts


def reusable(expected: list, tracker) -> list[bool]:
    """Which expected configurations already have a FINISHED run a job would reuse (as
    ``Tracker.find_finished`` sees it: same config hash, made by the same code (``code_version``),
    or by any code with ``reuse_other_code=true``), from one search over the study's experiment."""
    from seqbench.tracking import code_version

    versions = tracker.finished_versions() if tracker is not None else {}
    return [bool(versions.get(e.hash)) and (code_version() in versions[e.hash] or bool(e.cfg.get("reuse_other_code")))
            for e in expected]


def label(s) -> str:
    """How the sweep driver names a multirun: its grid, and for a tuned grid's comparison its point."""
    return point_key(s.grid, s.overrides) if s.stage == "compare" and s.grid.get("tune") else s.grid.get("name", "")


def run_stage(study: dict, stage: str, multiruns: list[Multirun], command_of, tracker, parent,
              launcher: str = "local", jobs: int | None = None) -> int | None:
    """Launch a stage's multiruns one after another, skipping those whose every configuration
    already has a reusable FINISHED run (not even a process is started). A multirun's ``unlocks()``
    join the queue when it has ended (at once when it is skipped).
    ``command_of(sweeps, first)`` gives their command lines. Returns the signal that
    stopped it, else None. Jobs that ran on this machine (not SLURM, whose jobs outlive the
    multirun) have all ended when it returns, so runs a signal left RUNNING are closed KILLED."""
    def to_run(candidates: list[Multirun]) -> list[Multirun]:
        """The multiruns with something to run; the skipped ones' unlocks, resolved at once."""
        out, queue, reused, total = [], list(candidates), 0, 0
        while queue:
            m = queue.pop(0)
            done = reusable(m.expected, tracker)
            reused, total = reused + sum(done), total + len(done)
            if m.expected and all(done):  # nothing to do: its jobs would all skip
                print(f"== {study['name']}: {m.sweep.stage}: {label(m.sweep)}: skipped, all {len(done)} "
                      f"configurations FINISHED", flush=True)
                queue += m.unlocks() if m.unlocks else []
            else:
                m.pending = [e for e, d in zip(m.expected, done) if not d]
                out.append(m)
        if reused:
            print(f"== {study['name']}: {stage}: {reused}/{total} configurations already have a FINISHED run "
                  f"to reuse (same config hash and code version): skipped", flush=True)
        return out

    todo = to_run(multiruns)
    waiting = sum(m.unlocks is not None for m in todo)
    if len(todo) + waiting > 1:
        print(f"== {study['name']}: {stage}: {len(todo)} multiruns, one at a time"
              + ("; each tuned grid's comparison joins the queue when its tuning multirun has ended" if waiting else ""),
              flush=True)
    commands = command_of([m.sweep for m in todo], 0)

    def then(i: int) -> list[list[str]]:
        if todo[i].unlocks is None:
            return []
        new = to_run(todo[i].unlocks())
        commands_ = command_of([m.sweep for m in new], len(todo))
        todo.extend(new)
        return commands_

    started_ms = int(time.time() * 1000)
    # a failing job is recorded FAILED by the job itself; the multirun goes on
    def announce(i: int) -> None:
        print(f"== {study['name']}: {todo[i].sweep.stage}: {label(todo[i].sweep)}", flush=True)

    signum = run_multiruns(commands, announce, then)
    if signum is not None:
        if tracker is not None and launcher != "slurm":
            close_orphans(tracker, parent, started_ms, signum)
        print(f"== {study['name']}: stopped by signal {signum}; runs in flight are recorded KILLED. "
              f"Run the same command again to finish what is missing.", file=sys.stderr)
        close_study_run(tracker, parent, "KILLED")
    return signum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqbench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("study", help=f"one of: {', '.join(studies())}")
    parser.add_argument("--launcher", default="local", help=f"one of: {', '.join(LAUNCHERS)}")
    parser.add_argument("--jobs", type=int, default=None, help="parallel jobs (local launcher)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_intermixed_args(argv)
    try:
        study = load_study(args.study)
    except SeqbenchError as e:
        print(f"seqbench.sweep: error: {e}", file=sys.stderr)
        return 2
    return run_study(study, args.launcher, args.jobs, args.overrides, args.dry_run)


def run_study(study: dict, launcher: str = "local", jobs: int | None = None, overrides: list[str] = (),
              dry_run: bool = False) -> int:
    """Run a loaded study under its parent run: the tuning multiruns and the comparison of the grids
    that tune nothing at once, and each tuned grid's comparison, at the settings chosen on its
    tuning runs, as soon as that grid's tuning multirun has ended (it waits for nothing else). The
    exit code: 0 all FINISHED (or a dry run), 1 a configuration left no record or the sweep failed
    (the parent run is then FAILED with its reason, after the multiruns in flight have ended), 2 bad
    input, 128+N a signal."""
    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    overrides = list(overrides)
    tracking = [o for o in overrides if o.startswith(("logger", "paths"))]
    extra = [o for o in overrides if o not in tracking]
    try:
        if study.get("kind") == "decoding":
            return decode_study(study, overrides)
        tune_sweeps, compare_sweeps = sweeps(study, "tune"), sweeps(study)
        if dry_run:
            print("\n".join(dry_run_lines(study, tune_sweeps, compare_sweeps, launcher, jobs, overrides)))
            return 0
        study_key = fingerprint(study, launcher, jobs, overrides, root)
        if (done := finished_before(root, study["name"], study_key, tracking)) is not None:
            parent, count = done
            print(f"== {study['name']}: all {count} configurations FINISHED by this code (parent run {parent}), "
                  f"nothing to run; report: make report STUDY={study['name']}")
            return 0
        check_launcher(launcher, extra)
        tuned = preflight(study, root, extra, stage="tune")
        expected = preflight(study, root, extra)
    except SeqbenchError as e:
        print(f"seqbench.sweep: error: {e}", file=sys.stderr)
        return 2
    tracker, parent = open_study_run(study, overrides)
    if tuned and tracker is None:
        print("seqbench.sweep: error: a study with `tune` chooses settings from its tuning runs in MLflow; "
              "logger=none cannot tune", file=sys.stderr)
        return 2
    nested = [f"logger.parent_run_id={parent}"] if parent is not None else []  # jobs nest under the parent

    def command_of(stage_sweeps: list, first: int) -> list[list[str]]:
        return [[*c, *nested] for c in sweep_commands(study, stage_sweeps, launcher, jobs, overrides, first)]

    def comparison_of(grid: dict) -> Callable[[], list[Multirun]]:
        """The tuned ``grid``'s comparison multiruns, at each point's setting chosen on its tuning runs."""
        def unlocks() -> list[Multirun]:
            _, chosen_expected, choice = resolve(study, root, tracker, extra)
            for point in dict.fromkeys(point_key(grid, p) for p in expand(grid["overrides"])):
                chosen = choice.get(point, {}).get("chosen", ["(no finished candidate)"])
                print(f"== {study['name']}: tuned {point}: {' '.join(chosen)}", flush=True)
            chosen = {k: v["chosen"] for k, v in choice.items() if "chosen" in v}
            return [Multirun(s, [e for e in chosen_expected if e.sweep == i])
                    for i, s in enumerate(sweeps(study, chosen=chosen)) if s.grid is grid]
        return unlocks

    if parent is not None:
        print(f"== {study['name']}: MLflow experiment {tracker.experiment!r}, parent run {parent}", flush=True)
    print(f"== {study['name']}: {len(tuned)} tuning + {len(expected)} comparison configurations", flush=True)
    multiruns = [Multirun(s, [e for e in tuned if e.sweep == i], comparison_of(s.grid))
                 for i, s in enumerate(tune_sweeps)]
    multiruns += [Multirun(s, [e for e in expected if e.sweep == i])
                  for i, s in enumerate(compare_sweeps) if not s.grid.get("tune")]
    try:
        signum = run_stage(study, "tune+compare" if tuned else "compare", multiruns, command_of, tracker, parent,
                           launcher, jobs)
    except Exception as err:  # e.g. choosing a tuned grid's settings: the multiruns in flight have ended
        close_study_run(tracker, parent, "FAILED", reason=f"{type(err).__name__}: {err}")
        if not isinstance(err, SeqbenchError):
            raise
        print(f"seqbench.sweep: error: {err}", file=sys.stderr)
        return 1
    if signum:
        return 128 + signum
    if tracker is None:
        return 0
    if tuned:  # the comparison at the settings chosen
        _, expected, _ = resolve(study, root, tracker, extra)
    # exit 1 only when a configuration left no record at all; FAILED runs are results, listed here
    counts = summarize(study, tuned + expected, tracker)
    if counts["finished"] == counts["expected"]:  # a later sweep of the same study resumes in seconds
        record_finished(tracker, parent, study_key, [e.hash for e in tuned + expected])
    close_study_run(tracker, parent, "FAILED" if counts["missing"] else "FINISHED", counts)
    return 1 if counts["missing"] else 0


def check_launcher(launcher: str, overrides: list[str]) -> None:
    """The launcher's own settings on the command line (``hydra.launcher.partition=debug``) exist
    in its config (``conf/hydra/launcher/<name>.yaml`` and the plugin's), checked before any run:
    one line naming the bad key and the valid ones."""
    from hydra import compose, initialize_config_dir

    from seqbench.errors import ConfigError
    from seqbench.validate import CONF_DIR

    if launcher not in LAUNCHERS:
        raise choice_error("launcher", launcher, LAUNCHERS)
    settings = [o for o in overrides if o.lstrip("+~").startswith("hydra.launcher.")]
    if not settings:
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        valid = sorted(k for k in compose("config", overrides=[f"hydra/launcher={launcher}"],
                                          return_hydra_config=True).hydra.launcher if not k.startswith("_"))
        for o in settings:
            key = o.lstrip("+~").split("=", 1)[0]
            if key.removeprefix("hydra.launcher.") not in valid:
                raise ConfigError(f"unknown {launcher} launcher setting {key!r}; valid: "
                                  + ", ".join(f"hydra.launcher.{k}" for k in valid))


def dry_run_lines(study: dict, tune_sweeps: list, compare_sweeps: list, launcher: str, jobs: int | None,
                  overrides: list[str]) -> list[str]:
    """The multirun command lines a sweep would start: the tuning multiruns and the untuned grids'
    comparison, then the tuned grids' comparison (at the first candidates until tuning has run)."""
    now = [*tune_sweeps, *(s for s in compare_sweeps if not s.grid.get("tune"))]
    later = [s for s in compare_sweeps if s.grid.get("tune")]
    lines = [" ".join(c[1:]) for c in sweep_commands(study, now, launcher, jobs, overrides)]
    if later:
        lines.append("# then each tuned grid's comparison, once its tuning multirun has ended, each point at its "
                     "chosen setting (here: the first candidates, until the tuning has run):")
        lines += [" ".join(c[1:]) for c in sweep_commands(study, later, launcher, jobs, overrides, len(now))]
    return lines


if __name__ == "__main__":
    sys.exit(main())
