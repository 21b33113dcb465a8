"""Every option of every config group composes; bad options fail with one clear line."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_cfg
from seqbench.errors import ConfigError
from seqbench.tracking import config_hash
from seqbench.cells import cell_class
from seqbench.validate import GROUPS, check_overrides, data_task, datasets_for, group_options, validate


def all_options():
    return [(g, o) for g in GROUPS for o in group_options(g)]


def partner(group: str, option: str) -> list[str]:
    """A task needs a dataset serving it and a dataset its task (task=classify data=sst2)."""
    if group == "task":
        return [f"data={datasets_for(option)[0]}"]
    if group == "data":
        return [f"task={data_task(option)}"]
    return []


@pytest.mark.parametrize("group,option", all_options())
def test_every_option_composes(group, option):
    cfg = compose_cfg([f"{group}={option}", *partner(group, option)])
    assert cfg[group].get("name", option) is not None
    OmegaConf.to_container(cfg[group], resolve=False)  # structurally valid
    bidirectional = group == "model" and cfg.model.get("bidirectional", False)
    stateless = group == "model" and not cell_class(cfg.model.cell).carries_state
    if bidirectional:  # impossible with the autoregressive LM task
        with pytest.raises(ConfigError, match="bidirectional"):
            validate(cfg)
    elif stateless:  # a bag of embeddings cannot carry the LM's state between windows
        with pytest.raises(ConfigError, match="carries no state"):
            validate(cfg)
    elif (group, option) == ("embedding", "pretrained"):  # the vector file is the user's to give
        with pytest.raises(ConfigError, match="needs the vector file: embedding.path="):
            validate(cfg)
    elif group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU and .*; use trainer=cpu, or trainer=ddp_cpu"):
            validate(cfg)
    else:
        validate(cfg)


def test_each_group_has_its_default_and_choices():
    cfg = compose_cfg()
    assert cfg.task.name == "lm" and cfg.data.name == "synthetic" and cfg.model.name == "lstm"
    assert {"rnn", "lstm", "gru"} <= set(group_options("model"))
    assert {"cpu", "gpu", "ddp_cpu", "ddp"} <= set(group_options("trainer"))
    assert "default" not in group_options("trainer")


@pytest.mark.parametrize("override,message", [
    ("model=quantum", "unknown model 'quantum'; valid choices: "),
    ("data=imagenet", "unknown data 'imagenet'; valid choices: "),
    ("trainer=tpu", "unknown trainer 'tpu'; valid choices: cpu, ddp, ddp_cpu, gpu"),
    ("optimizer=rmsprop", "unknown optimizer 'rmsprop'; valid choices: adagrad, adam, adamw, rprop, sgd"),
    ("model=lstm,foo", "unknown model 'foo'"),
])
def test_unknown_group_option_lists_valid_choices(override, message):
    with pytest.raises(ConfigError) as e:
        check_overrides([override])
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
    if override.startswith("model="):
        for choice in group_options("model"):
            assert choice in str(e.value)


@pytest.mark.parametrize("override,fragment", [
    ("model.impl=magic", "unknown model.impl 'magic'; valid choices: auto, fused, scratch"),
    ("model.nonlinearity=sigmoid", "valid choices: relu, tanh"),
    ("optimizer.lr=0", "optimizer.lr=0 must be > 0"),
    ("optimizer.betas=[1.5,0.9]", "optimizer=adam: Invalid beta parameter at index 0: 1.5"),
    ("trainer.gradient_clip_algorithm=median", "valid choices: norm, value"),
    ("model.hidden_size=0", "model.hidden_size=0 must be >= 1"),
    ("model.bidirectional=true", "bidirectional"),
])
def test_bad_values_fail_validation_with_one_line(override, fragment):
    cfg = compose_cfg([override] + (["model=rnn"] if "nonlinearity" in override else []))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_sample_temperature_must_be_positive():
    with pytest.raises(ConfigError, match="decoding.temperature=0.0 must be > 0"):
        validate(compose_cfg(["decoding=sample", "decoding.temperature=0.0"]))


def test_config_hash_ignores_outputs_and_tracks_experiment():
    base = config_hash(compose_cfg())
    assert base == config_hash(compose_cfg())
    assert len(base) == 16
    # where things are written or tracked does not change the experiment
    assert config_hash(compose_cfg(["paths.root=/elsewhere"])) == base
    assert config_hash(compose_cfg(["logger=none"])) == base
    assert config_hash(compose_cfg(["trainer.enable_progress_bar=false"])) == base
    # what is trained does
    for override in ("model=gru", "seed=1", "optimizer.lr=0.01", "scheduler=step", "data.num_train=10",
                     "trainer.max_epochs=1"):
        assert config_hash(compose_cfg([override])) != base, override


def test_groups_tags_and_task_knowledge_are_derived_from_conf_and_the_task_classes():
    """No hand-kept list: the groups are conf/'s folders, the tags every group that names its
    options and changes results, and each task class says what its report and summary show."""
    from hydra.utils import get_class

    from seqbench.tasks.base import Task
    from seqbench.tracking import OUTPUT_ONLY_KEYS, TAG_GROUPS
    from seqbench.validate import CONF_DIR

    folders = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} - {"hydra"}
    assert set(GROUPS) == folders
    assert set(TAG_GROUPS) == {g for g in folders if g not in OUTPUT_ONLY_KEYS and g != "trainer"}
    for task in group_options("task"):
        cls = get_class(OmegaConf.load(CONF_DIR / "task" / f"{task}.yaml")._target_)
        assert issubclass(cls, Task)
        keys = cls.summary_keys()
        assert cls.primary_metric[0] in keys and set(cls.secondary_metrics) <= set(keys)
        assert cls.curve_metric.startswith("val/")
