"""``python -m seqbench [group=option ...] [key=value ...]``: one Hydra-composed run;
``python -m seqbench -m model=rnn,gru seed=0,1,2``: a Hydra multirun sweep."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seqbench.errors import SeqbenchError, Terminated
from seqbench.stopping import handle_signals, stop_job, stop_sweep, stopped_by
from seqbench.validate import CONF_DIR, check_keys, check_overrides


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from seqbench.run import run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if stopped_by:  # this process was told to stop: the jobs left are not started
        print(f"skipped: stopped by signal {stopped_by[0]}", file=sys.stderr)
        return None
    # again inside the job: launcher workers (joblib/loky processes, submitit on SLURM) run this
    # function in their own process, where main()'s handlers were never installed
    handle_signals(stop_job)
    try:
        result = run(cfg)
    except Terminated as e:
        if not multirun:
            raise
        print(f"seqbench: job {e}", file=sys.stderr)
        return None  # recorded KILLED; the launcher's process exits once the jobs are done
    except SeqbenchError as e:  # a user error: one line, no traceback
        print(f"seqbench: error: {e}", file=sys.stderr)
        if multirun:
            return None  # recorded FAILED in MLflow; the sweep goes on with the other jobs
        sys.exit(2)
    except Exception as e:
        if not multirun:
            raise
        print(f"seqbench: job failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None  # recorded FAILED with its reason; never stop the other jobs
    return result.get("val/loss")  # the objective a Hydra sweeper (optuna) minimises


def main() -> None:
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    handle_signals(stop_sweep if multirun else stop_job)
    try:
        check_overrides(sys.argv[1:])
        check_keys(sys.argv[1:])
        _hydra_main()
    except SeqbenchError as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (Terminated, SystemExit, Exception):
        if not stopped_by:
            raise
    if stopped_by:
        print(f"seqbench: {Terminated(stopped_by[0])}; runs in flight are recorded KILLED", file=sys.stderr)
        sys.exit(128 + stopped_by[0])


if __name__ == "__main__":
    main()
