"""``python -m seqbench.tune model=lstm --trials 20``: tune learning rate and hidden size of a cell.

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

from seqbench.errors import ConfigError, SeqbenchError
from seqbench.sweep import PIPELINES

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
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "lstm")
    key = hashlib.sha256(" ".join(sorted(overrides)).encode()).hexdigest()[:8]
    return f"tune-{model}-{key}"


def main(argv: list[str] | None = None) -> int:
    import optuna
    from hydra import compose, initialize_config_dir

    from seqbench.run import run
    from seqbench.validate import CONF_DIR, check_overrides

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
    except SeqbenchError as e:
        print(f"seqbench.tune: error: {e}", file=sys.stderr)
        return 2
    name = study_name(args.overrides)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{root}/optuna.db", load_if_exists=True,
                                direction=space.get("direction", "minimize"),
                                sampler=optuna.samplers.TPESampler(seed=args.seed))

    def objective(trial) -> float:
        params = [f"{k}={suggest(trial, k, spec)}" for k, spec in space["params"].items()]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.root={root}", *space.get("common", []),
                                               *args.overrides, *params, f"study={name}"])
        metrics = run(cfg)
        trial.set_user_attr("mlflow_run_id", metrics.get("run_id"))
        value = metrics[space.get("objective", "val/best_loss")]
        if not math.isfinite(value):
            raise SeqbenchError(f"objective is {value}")
        return value

    done = len([t for t in study.trials if t.state.is_finished()])
    study.optimize(objective, n_trials=max(0, args.trials - done), catch=(Exception,))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"study {name}: {len(complete)} complete / {len(study.trials)} trials (optuna.db)")
    if complete:
        best = study.best_trial
        print(f"best {space.get('objective', 'val/best_loss')} = {best.value:.4f} with {best.params} "
              f"(MLflow run {best.user_attrs.get('mlflow_run_id')})")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
