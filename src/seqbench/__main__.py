"""``python -m seqbench [group=option ...] [key=value ...]``: one Hydra-composed run."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from seqbench.errors import SeqbenchError
from seqbench.validate import CONF_DIR, check_overrides


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from seqbench.run import run

    try:
        result = run(cfg)
    except SeqbenchError as e:  # Hydra would print a traceback; a user error is one line
        print(f"seqbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    return result.get("val/loss")  # the objective Hydra sweepers (optuna) minimise


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
        _hydra_main()
    except SeqbenchError as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
