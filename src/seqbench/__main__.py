"""``python -m seqbench [group=option ...] [key=value ...]``: one Hydra-composed run;
``python -m seqbench -m model=rnn,gru seed=0,1,2``: a Hydra multirun sweep."""

from __future__ import annotations

import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seqbench.errors import SeqbenchError
from seqbench.validate import CONF_DIR, check_overrides


def _terminate(signum, frame):
    """SIGTERM (SLURM preemption, a killed sweep) ends the run as KILLED instead of vanishing."""
    raise KeyboardInterrupt(f"terminated by signal {signum}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from seqbench.run import run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = run(cfg)
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
    signal.signal(signal.SIGTERM, _terminate)
    try:
        check_overrides(sys.argv[1:])
        _hydra_main()
    except SeqbenchError as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
