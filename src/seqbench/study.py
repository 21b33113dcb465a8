"""A study: ``pipelines/<name>.yaml``, a list of grids over Hydra overrides with shared seeds.

Both the sweep (what to run) and the report (what to look up) expand a study into the same list of
expected configurations, each composed with Hydra and identified by its config hash.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from seqbench.errors import ConfigError, choice_error
from seqbench.tracking import config_hash

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def studies() -> list[str]:
    """Names of the studies in pipelines/ (tune.yaml there is a search space, not a study)."""
    return sorted(p.stem for p in PIPELINES.glob("*.yaml") if "name" in (yaml.safe_load(p.read_text()) or {}))


def load_study(name: str) -> dict:
    """A study by name (``pipelines/<name>.yaml``) or by path to a YAML file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PIPELINES / f"{name}.yaml"
    if not path.is_file():
        raise choice_error("study", name, studies())
    study = yaml.safe_load(path.read_text())
    for key in ("name", "source_study") if study.get("kind") == "decoding" else ("name", "grids"):
        if key not in study:
            raise ConfigError(f"study file {path} has no '{key}' key")
    return study


def study_tracker(root: str, study: str, overrides: list[str] = ()):
    """The Tracker of a study's experiment (``<experiment>/<study>``) under the logger settings
    in ``overrides`` (``logger.*``, ``paths.*``); None with ``logger=none``."""
    from hydra import compose, initialize_config_dir

    from seqbench.tracking import tracker_for
    from seqbench.validate import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={root}", *overrides, f"study={study}"])
    return tracker_for(cfg) if cfg.logger.name == "mlflow" else None


@dataclass
class Expected:
    """One configuration the study asks for."""

    overrides: list[str]
    cfg: DictConfig
    hash: str = field(init=False)

    def __post_init__(self):
        self.hash = config_hash(self.cfg)


def expand(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of Hydra sweep overrides: ['a=1,2', 'b=x'] -> [['a=1','b=x'], ['a=2','b=x']]."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


def expected_runs(study: dict, root: str, extra: list[str] = ()) -> list[Expected]:
    """Every (grid point x seed) of the study, composed as the sweep's jobs compose it."""
    from hydra import compose, initialize_config_dir

    from seqbench.validate import CONF_DIR, check_keys, check_overrides

    seeds = ",".join(str(s) for s in study.get("seeds", [0]))
    out = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for grid in study["grids"]:
            sweep = [*grid["overrides"], f"seed={seeds}", *study.get("common", []), *extra]
            check_base(grid, sweep, root)
            for point in expand(sweep):
                check_overrides(point)
                try:
                    cfg = compose("config", overrides=[f"paths.root={root}", *point, f"study={study['name']}"])
                except Exception as e:  # Hydra's composition error (unknown key, bad type): one line
                    try:
                        check_keys(point)
                    except ConfigError as unknown:
                        e = unknown
                    raise ConfigError(f"grid '{grid.get('name', '')}': {str(e).splitlines()[0]}") from None
                out.append(Expected(point, cfg))
    return out


def check_base(grid: dict, sweep: list[str], root: str) -> None:
    """Hydra's multirun first composes a grid's base config from its non-sweep overrides alone
    (every swept group at its default), so ``tokenizer=bpe,word tokenizer.vocab_size=1000`` fails
    there (the default char tokenizer has no vocab_size) even though every job would compose."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(sweep)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    from seqbench.validate import check_keys

    try:
        check_keys(sweep)  # a misspelt key is that, whatever the base composition says
    except ConfigError as e:
        raise ConfigError(f"grid '{grid.get('name', '')}': {e}") from None
    try:
        compose("config", overrides=[f"paths.root={root}", *base])
    except Exception as e:
        raise ConfigError(f"grid '{grid.get('name', '')}': {str(e).splitlines()[0]} in the base config "
                          f"Hydra composes without the swept values ({', '.join(swept)} at their defaults); "
                          f"split the grid so that override applies to one option") from None
