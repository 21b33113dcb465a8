"""``python -m seqbench.tune model=rnn,lstm,gru --trials 20``: tune learning rate and hidden size of each cell.

One optuna study per cell (``model=a,b,c`` tunes each in turn), then a table of every cell's best
trial, so cells are compared each at its own tuned setting rather than at one shared guess.

Optuna drives the search directly rather than through hydra-optuna-sweeper: that plugin (1.3.0)
pins optuna<3, its sweeps are not resumable and one failed trial stops the study. Here the study
lives in an optuna RDB store (``<root>/optuna.db``; re-running continues it), a failed or
diverged trial is recorded FAIL (and FAILED in MLflow) and the search goes on, and every trial is
an ordinary seqbench run composed by Hydra from ``pipelines/tune.yaml`` + the given overrides.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path

import yaml

from seqbench.errors import ConfigError, SeqbenchError, Terminated
from seqbench.stopping import handle_signals, restore_signals, stop_job
from seqbench.study import PIPELINES, study_tracker

SPACE_TYPES = ("float", "int", "categorical")


def suggest(trial, name: str, spec: dict):
    kind = spec.get("type")
    if kind == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
    if kind == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
    if kind == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    raise ConfigError(f"unknown search-space type {kind!r} for {name}; valid choices: {', '.join(SPACE_TYPES)}")


def study_name(overrides: list[str]) -> str:
    """``tune-<model>-<hash of the other overrides>``: one optuna study per cell and setting."""
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "lstm")
    rest = sorted(o for o in overrides if not o.startswith("model="))
    return f"tune-{model}-{hashlib.sha256(' '.join(rest).encode()).hexdigest()[:8]}"


def main(argv: list[str] | None = None) -> int:
    import optuna

    from seqbench.validate import check_keys, check_overrides

    parser = argparse.ArgumentParser(prog="python -m seqbench.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--space", default=str(PIPELINES / "tune.yaml"))
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gru data=timemachine")
    args = parser.parse_intermixed_args(argv)
    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    space = yaml.safe_load(Path(args.space).read_text())
    try:
        check_overrides(args.overrides)
        check_keys(args.overrides)
    except SeqbenchError as e:
        print(f"seqbench.tune: error: {e}", file=sys.stderr)
        return 2
    models = next((o.split("=", 1)[1].split(",") for o in args.overrides if o.startswith("model=")), ["lstm"])
    rest = [o for o in args.overrides if not o.startswith("model=")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    previous = handle_signals(stop_job)  # Ctrl-C / SIGTERM: the trial in flight ends KILLED (FAIL in optuna)
    try:
        best = {model: tune_one([*rest, f"model={model}"], space, args.trials, args.seed, root)
                for model in models}
    except Terminated as e:
        print(f"seqbench.tune: {e}; run the same command again to continue", file=sys.stderr)
        return e.exit_code
    finally:
        restore_signals(previous)
    objective = space.get("objective", "val/best_loss")
    print(f"\nbest trial per cell ({objective}, {space.get('direction', 'minimize')}; optuna.db):")
    print(f"| model | {objective} | " + " | ".join(space["params"]) + " | complete trials | MLflow run |")
    print("|---" * (len(space["params"]) + 4) + "|")
    for model, (trial, complete) in best.items():
        if trial is None:
            print(f"| {model} | – | " + " | ".join("–" for _ in space["params"]) + " | 0 | – |")
        else:
            print(f"| {model} | {trial.value:.4f} | " + " | ".join(f"{trial.params[k]:.4g}" if isinstance(
                trial.params[k], float) else str(trial.params[k]) for k in space["params"])
                  + f" | {complete} | {trial.user_attrs.get('mlflow_run_id')} |")
    return 0 if all(trial is not None for trial, _ in best.values()) else 1


def tune_one(overrides: list[str], space: dict, trials: int, seed: int, root: str):
    """Run (or continue) one cell's optuna study up to ``trials`` finished trials; return its best
    trial (None when none completed) and the number of complete trials."""
    import optuna
    from hydra import compose, initialize_config_dir

    from seqbench.run import run
    from seqbench.validate import CONF_DIR

    name = study_name(overrides)
    # the trials are nested runs under one parent per optuna study, in its own experiment
    tracker = study_tracker(root, name, [o for o in overrides if o.startswith(("logger", "paths"))])
    parent = tracker.study_run(name, f"optuna search of {', '.join(space['params'])} for "
                                     f"{' '.join(overrides)}") if tracker else None
    nested = [f"logger.parent_run_id={parent}"] if parent else []
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{root}/optuna.db", load_if_exists=True,
                                direction=space.get("direction", "minimize"),
                                sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial) -> float:
        params = [f"{k}={suggest(trial, k, spec)}" for k, spec in space["params"].items()]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.root={root}", *space.get("common", []),
                                               *overrides, *params, f"study={name}", *nested])
        metrics = run(cfg)
        trial.set_user_attr("mlflow_run_id", metrics.get("run_id"))
        value = metrics[space.get("objective", "val/best_loss")]
        if not math.isfinite(value):
            raise SeqbenchError(f"objective is {value}")
        return value

    done = len([t for t in study.trials if t.state.is_finished()])
    if parent:
        tracker.client.update_run(parent, status="RUNNING")
    try:
        study.optimize(objective, n_trials=max(0, trials - done), catch=(Exception,))
    except BaseException:
        if parent:
            tracker.client.set_terminated(parent, "KILLED")
        raise
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if parent:
        if complete:
            tracker.log_metrics({f"best_{space.get('objective', 'val/best_loss')}": study.best_value,
                                 "complete_trials": len(complete)}, run_id=parent)
        tracker.client.set_terminated(parent, "FINISHED" if complete else "FAILED")
    print(f"study {name}: {len(complete)} complete / {len(study.trials)} trials")
    return (study.best_trial if complete else None), len(complete)


if __name__ == "__main__":
    sys.exit(main())
