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
from hydra.utils import get_class
from seqbench.errors import instantiate
from omegaconf import DictConfig

from seqbench.errors import ConfigError, choice_error

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def config_groups(conf_dir: Path = CONF_DIR) -> tuple[str, ...]:
    """The config groups: the folders of ``conf/`` (``hydra/`` holds Hydra's own settings)."""
    return tuple(sorted(p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"))


GROUPS = config_groups()


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """Options of a config group: the YAML files in ``conf/<group>/`` (``default`` bases excluded
    for trainer, which only exist to be inherited)."""
    names = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
    return [n for n in names if not (group == "trainer" and n == "default")]


def check_overrides(overrides: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """``model=foo`` -> ConfigError("unknown model 'foo'; valid choices: <the options>")
    (the options: the YAML files of ``conf/<group>/``, sorted; named here, not listed, so adding one
    changes no docstring)."""
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


def all_keys(node, prefix: str = "") -> list[str]:
    """Dotted paths of every key in a config (``model.hidden_size``, ``task.generate.prompt``, ...)."""
    from omegaconf import DictConfig

    keys = []
    for k in node.keys():
        path = f"{prefix}{k}"
        keys.append(path)
        value = node._get_node(k)
        if isinstance(value, DictConfig):
            keys += all_keys(value, f"{path}.")
    return keys


def unknown_key_error(key: str, cfg) -> ConfigError:
    """``unknown key 'model.hiden_size'; closest valid keys: model.hidden_size, ...``: the keys of the
    same place in the config nearest in spelling, after any key elsewhere with the same last part
    (``task.lr`` -> ``optimizer.lr``)."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [k for k in all_keys(cfg) if not k.startswith("hydra") and not k.rpartition(".")[2].startswith("_")]
    siblings = [k for k in keys if k.rpartition(".")[0] == parent] if isinstance(node, DictConfig) else \
        [k for k in keys if "." not in k]
    same_leaf = [k for k in keys if k.rpartition(".")[2] == leaf and k != key]
    close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.0)
    choices = list(dict.fromkeys([*same_leaf, *close]))[:4]
    return ConfigError(f"unknown key {key!r}; closest valid keys: {', '.join(choices)}")


def check_keys(overrides: Iterable[str], config_name: str = "config", conf_dir: Path = CONF_DIR) -> None:
    """``model.nonexistent_key=1`` or ``foo=bar`` -> one line naming the key and the closest valid
    ones (Hydra says it in seven). The config is composed with the command's group choices (a swept
    group at its first option); ``+key=`` (append) and ``hydra.*`` overrides are Hydra's business."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.types import OverrideType

    parsed = OverridesParser.create().parse_overrides([a for a in overrides if not a.startswith("-")])
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    is_group = lambda o: o.key_or_group in groups or o.package is not None
    keyed = [o for o in parsed if not is_group(o) and o.type == OverrideType.CHANGE
             and not o.key_or_group.startswith("hydra")]
    if not keyed:
        return
    first = lambda o: next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
    choices = [f"{o.key_or_group}={first(o)}" for o in parsed if is_group(o) and o.type == OverrideType.CHANGE]
    try:
        if GlobalHydra.instance().is_initialized():  # inside a caller's initialize_config_dir block
            cfg = compose(config_name, overrides=choices)
        else:
            with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
                cfg = compose(config_name, overrides=choices)
    except Exception:  # a bad group option: check_overrides says so in one line
        return
    for o in keyed:
        if not has_key(cfg, o.key_or_group):
            raise unknown_key_error(o.key_or_group, cfg)


def has_key(cfg, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg``. A mandatory value (``path: ???`` in its YAML)
    is a key the command line must set, not an unknown one, so it counts as present."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    absent = object()
    try:
        return OmegaConf.select(cfg, key, default=absent, throw_on_missing=True) is not absent
    except MissingMandatoryValue:
        return True


def data_task(data: str, conf_dir: Path = CONF_DIR) -> str:
    """The task a ``data=`` option serves: its YAML's ``task:`` (``lm`` when absent)."""
    from omegaconf import OmegaConf

    return OmegaConf.load(conf_dir / "data" / f"{data}.yaml").get("task", "lm")


def reads_data_of(task: str, conf_dir: Path = CONF_DIR) -> str:
    """The ``task:`` a dataset declares to serve ``task=<task>``: the task class's ``data_task``
    (``task=ngram`` reads the LM corpora), else the task's own name."""
    from omegaconf import OmegaConf

    path = conf_dir / "task" / f"{task}.yaml"
    target = OmegaConf.load(path).get("_target_") if path.is_file() else None
    return (getattr(get_class(target), "data_task", None) if target else None) or task


def datasets_for(task: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The ``data=`` options serving ``task``."""
    wanted = reads_data_of(task, conf_dir)
    return [name for name in group_options("data", conf_dir) if data_task(name, conf_dir) == wanted]


def check_run(cfg: DictConfig) -> None:
    """What the run itself needs: an integer seed, a budget that trains at least one epoch, and an
    early-stopping patience that is a number of epochs."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer (e.g. seed=0)")
    epochs = cfg.trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs={epochs!r} must be an integer >= 1 (a run that trains nothing "
                          f"would be recorded FINISHED)")
    if cfg.get("stage", "compare") not in ("compare", "tune"):
        raise choice_error("stage", cfg.stage, ("compare", "tune"))
    patience = (cfg.get("early_stopping") or {}).get("patience")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 0):
        raise ConfigError(f"early_stopping.patience={patience!r} must be an integer >= 0, or null (train the whole budget)")


def check_trainer(trainer: DictConfig) -> None:
    """A GPU trainer (``trainer=gpu``, ``trainer=ddp``) needs as many CUDA devices as it asks for.
    Lightning would find out only when the Trainer is built, inside the MLflow run, in five lines."""
    import torch

    if str(trainer.get("accelerator", "cpu")) not in ("gpu", "cuda"):
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    why = (f"this torch ({torch.__version__}) is a CPU build" if torch.version.cuda is None
           else "torch sees no CUDA device")
    if found == 0:
        raise ConfigError(f"trainer.accelerator={trainer.accelerator} needs a CUDA GPU and {why}; "
                          f"use trainer=cpu, or trainer=ddp_cpu for DDP on CPU")
    devices = trainer.get("devices", 1)
    if isinstance(devices, int) and devices > found:
        raise ConfigError(f"trainer.devices={devices} but torch sees {found} CUDA device(s); "
                          f"use trainer.devices={found} (or -1: every GPU)")


def validate(cfg: DictConfig) -> None:
    """Check values and combinations of a composed config; raise ConfigError with one line.

    Each rule has one home, in the component it is about: the run's own keys here, the model in
    ``seqbench.cells.check_model``, the task (its data, direction, embedding, optimizer, scheduler)
    in its class's ``check_config``, decoding strategies and tokenizer specs in their constructors.
    Choices come from the config groups and registries, never from a list kept here."""
    from lightning.pytorch.utilities.enums import GradClipAlgorithmType

    from seqbench.cells import check_model

    check_run(cfg)
    for group in ("task", "logger"):  # a composed config may come from elsewhere than the command line
        if cfg[group].name not in group_options(group):
            raise choice_error(group, cfg[group].name, group_options(group))
    check_model(cfg.model)
    check_trainer(cfg.trainer)
    clip = [a.value for a in GradClipAlgorithmType]
    if cfg.trainer.get("gradient_clip_algorithm", "norm") not in clip:
        raise choice_error("trainer.gradient_clip_algorithm", cfg.trainer.gradient_clip_algorithm, clip)
    instantiate(cfg.decoding)  # strategies validate their own parameters
    instantiate(cfg.tokenizer)  # so do tokenizer specs (vocab_size)
    get_class(cfg.embedding._target_).check_config(cfg.embedding)  # e.g. pretrained: its vector file
    get_class(cfg.task._target_).check_config(cfg)  # the task's own checks (data, model, optimizer, ...)
    check_mandatory(cfg)


def check_mandatory(cfg: DictConfig) -> None:
    """A value its YAML leaves to the user (``???``) must be given: one line naming the key (a
    component with a better message, e.g. ``embedding=pretrained``, has said it already)."""
    from omegaconf import OmegaConf

    for key in all_keys(cfg):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if OmegaConf.is_missing(node, leaf):
            raise ConfigError(f"{key} is mandatory and has no value: set {key}=... on the command line")
