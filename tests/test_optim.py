"""Optimizer and scheduler groups: every option builds its torch class, schedules move the lr as their
formula says, bad values fail before any run with one line."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import compose_cfg
from seqbench.errors import ConfigError, instantiate
from seqbench.report import protocol
from seqbench.run import build
from seqbench.validate import check_overrides, group_options, validate

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors

#: a few-second LM: 50 generated sentences, hidden 8
SMALL = ["data.num_train=50", "data.num_val=10", "data.num_test=10", "model.hidden_size=8", "embedding.dim=4",
         "task.batch_size=4", "task.eval_batch_size=2", "task.bptt=16", "task.probe=false",
         "trainer.enable_progress_bar=false", "logger=none"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad, "rprop": torch.optim.Rprop}
SCHEDULERS = {"none": None, "step": torch.optim.lr_scheduler.StepLR,
              "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
              "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One project root: the char tokenizer is trained once and read from its cache after."""
    return tmp_path_factory.mktemp("optim")


def small(root, *overrides):
    cfg = compose_cfg([*SMALL, *overrides], root=root)
    validate(cfg)
    return cfg


def test_every_option_file_is_covered():
    assert set(group_options("optimizer")) == set(OPTIMIZERS)
    assert set(group_options("scheduler")) == set(SCHEDULERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_builds_its_torch_class_with_the_configured_lr(root, name):
    cfg = small(root, f"optimizer={name}", "optimizer.lr=0.05")
    assert cfg.optimizer.name == name
    *_, module = build(cfg)
    opt = module.configure_optimizers()
    assert type(opt) is OPTIMIZERS[name]
    assert opt.param_groups[0]["lr"] == 0.05
    from omegaconf import OmegaConf

    for key, value in OmegaConf.to_container(cfg.optimizer).items():  # every argument the option sets reaches torch
        if key not in ("_target_", "_partial_", "name"):
            got = opt.param_groups[0][key]
            assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == module.num_parameters()


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_scheduler_builds_its_torch_class_and_lightning_settings(root, name):
    cfg = small(root, f"scheduler={name}")
    *_, module = build(cfg)
    out = module.configure_optimizers()
    if SCHEDULERS[name] is None:
        assert isinstance(out, torch.optim.Adam)
        return
    assert isinstance(out["optimizer"], torch.optim.Adam)
    sched = out["lr_scheduler"]
    assert type(sched["scheduler"]) is SCHEDULERS[name] and sched["scheduler"].optimizer is out["optimizer"]
    assert (sched["interval"], sched["frequency"], sched["monitor"]) == ("epoch", 1, "val/loss")


def test_cosine_period_follows_the_epoch_budget(root):
    cfg = small(root, "scheduler=cosine", "trainer.max_epochs=5")
    *_, module = build(cfg)
    assert module.configure_optimizers()["lr_scheduler"]["scheduler"].T_max == 5


@pytest.mark.parametrize("overrides,expected", [
    # StepLR: lr0 * gamma ** floor(epochs / step_size)
    (["scheduler=step"], 0.003 * 0.5 ** math.floor(3 / 2)),
    # CosineAnnealingLR over T_max = max_epochs: eta_min at the end
    (["scheduler=cosine", "scheduler.eta_min=0.0001"], 0.0001),
    # ReduceLROnPlateau, patience 0: an lr too small to move val/loss is cut after epochs 2 and 3
    (["scheduler=plateau", "optimizer.lr=1e-7"], 1e-7 * 0.25 ** 2),
])
def test_scheduler_moves_the_lr_in_a_lightning_fit(root, tmp_path, overrides, expected):
    cfg = small(root, "trainer.max_epochs=3", *overrides)
    _, _, datamodule, module = build(cfg)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[checkpoint], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)
    # the checkpoint (scheduler state, optimizer/scheduler hyper-parameters) loads with weights_only
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["scheduler"]["name"] == cfg.scheduler.name
    assert len(ckpt["lr_schedulers"]) == 1


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.lr=0"], "optimizer.lr=0 must be > 0"),
    (["optimizer.betas=[1.5,0.9]"], "optimizer=adam: Invalid beta parameter at index 0: 1.5"),
    (["optimizer=sgd", "optimizer.nesterov=true"],
     "optimizer=sgd: Nesterov momentum requires a momentum and zero dampening"),
    (["scheduler=plateau", "scheduler.mode=up"], "scheduler=plateau: mode up is unknown!"),
])
def test_bad_values_fail_validation_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides))
    assert str(e.value) == message


@pytest.mark.parametrize("override,message", [
    ("optimizer=rmsprop", "unknown optimizer 'rmsprop'; valid choices: adagrad, adam, adamw, rprop, sgd"),
    ("scheduler=foo", "unknown scheduler 'foo'; valid choices: cosine, none, plateau, step"),
])
def test_unknown_option_lists_valid_choices(override, message):
    with pytest.raises(ConfigError) as e:
        check_overrides([override])
    assert str(e.value) == message


def test_report_protocol_names_optimizer_and_schedule():
    assert "optimizer adam lr 0.003, clip" in protocol(compose_cfg(), [0])
    assert "optimizer sgd lr 0.1, scheduler plateau, clip" in protocol(
        compose_cfg(["optimizer=sgd", "optimizer.lr=0.1", "scheduler=plateau"]), [0])
