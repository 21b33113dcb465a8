"""Hydra entry points of the side tools (generate, compare_decoding) share one error contract:
a SeqbenchError is printed as one line ``<prog>: error: ...`` and exits 2."""

from __future__ import annotations

import sys
from typing import Callable

import hydra
from omegaconf import DictConfig

from seqbench.errors import SeqbenchError
from seqbench.validate import CONF_DIR, check_keys, check_overrides


def hydra_entry(prog: str, config_name: str, body: Callable[[DictConfig], object]) -> Callable[[], None]:
    """``main`` for ``python -m <prog>``: check group overrides and keys, compose ``config_name``, call ``body``."""

    def fail(e: SeqbenchError) -> None:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def _hydra_main(cfg: DictConfig) -> None:
        try:
            body(cfg)
        except SeqbenchError as e:
            fail(e)

    def main() -> None:
        try:
            check_overrides(sys.argv[1:])
            check_keys(sys.argv[1:], config_name)
            _hydra_main()
        except SeqbenchError as e:
            fail(e)

    return main
