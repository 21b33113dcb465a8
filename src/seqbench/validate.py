"""Fail fast: every check here runs before any MLflow run exists.

Two layers: :func:`check_overrides` looks at the command line's ``group=option`` overrides against
the YAML files in ``conf/`` (one line naming the bad option and the valid ones, instead of
Hydra's multi-line message), and :func:`validate` checks the composed config's values and
combinations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from seqbench.errors import instantiate
from omegaconf import DictConfig

from seqbench.errors import ConfigError, choice_error

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("task", "data", "tokenizer", "embedding", "model", "decoding", "trainer", "logger", "paths")


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Options of a config group: the YAML files in ``conf/<group>/`` (``default`` bases excluded
    for trainer, which only exist to be inherited)."""
    names = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
    return [n for n in names if not (group == "trainer" and n == "default")]


def check_overrides(overrides: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """``model=foo`` -> ConfigError("unknown model 'foo'; valid choices: gru, lstm, rnn")."""
    args = [a for a in overrides if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # Hydra's own parse error is already one clear message
        raise ConfigError(str(e).splitlines()[0]) from None
    for o in parsed:
        group = o.key_or_group
        if group not in GROUPS or o.package or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        valid = group_options(group, conf_dir)
        for v in values:
            if v not in valid:
                raise choice_error(group, v, valid)


TASKS = ("lm",)
CLIP_ALGORITHMS = ("norm", "value")
LOGGERS = ("mlflow", "none")


def validate(cfg: DictConfig) -> None:
    """Check values and combinations of a composed config; raise ConfigError with one line."""
    from seqbench.cells import resolve_impl

    if cfg.task.name not in TASKS:
        raise choice_error("task", cfg.task.name, TASKS)
    resolve_impl(cfg.model.cell, cfg.model.get("impl", "auto"))
    if cfg.task.name == "lm" and cfg.model.get("bidirectional", False):
        raise ConfigError(f"model={cfg.model.name} is bidirectional and cannot generate left to right: "
                          f"task=lm needs a unidirectional model (e.g. model=lstm, or use task=classify)")
    if cfg.model.get("nonlinearity", "tanh") not in ("tanh", "relu"):
        raise choice_error("model.nonlinearity", cfg.model.nonlinearity, ("tanh", "relu"))
    for key in ("hidden_size", "num_layers"):
        if int(cfg.model[key]) < 1:
            raise ConfigError(f"model.{key}={cfg.model[key]} must be >= 1")
    if not 0.0 <= float(cfg.model.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    for key in ("batch_size", "eval_batch_size", "bptt"):
        if key in cfg.task and int(cfg.task[key]) < 1:
            raise ConfigError(f"task.{key}={cfg.task[key]} must be >= 1")
    if cfg.task.get("optimizer", "adam") not in ("adam", "sgd"):
        raise choice_error("task.optimizer", cfg.task.optimizer, ("adam", "sgd"))
    if not float(cfg.task.lr) > 0:
        raise ConfigError(f"task.lr={cfg.task.lr} must be > 0")
    if cfg.trainer.get("gradient_clip_algorithm", "norm") not in CLIP_ALGORITHMS:
        raise choice_error("trainer.gradient_clip_algorithm", cfg.trainer.gradient_clip_algorithm,
                           CLIP_ALGORITHMS)
    if cfg.logger.name not in LOGGERS:
        raise choice_error("logger", cfg.logger.name, LOGGERS)
    instantiate(cfg.decoding)  # strategies validate their own parameters
