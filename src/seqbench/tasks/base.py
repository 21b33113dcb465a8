"""What every task module shares: the embedding -> recurrent stack encoder, the optimizer and the
learning-rate scheduler (Hydra partials from the ``optimizer`` and ``scheduler`` config groups)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from seqbench.errors import instantiate
from omegaconf import DictConfig, OmegaConf

from seqbench.errors import ConfigError
from seqbench.init import init_recurrent

#: keys of a scheduler option that tell Lightning when to step it (not constructor arguments)
LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor")


def plain(cfg) -> dict:
    """DictConfig -> plain dict (checkpoint hyper-parameters must load with weights_only=True)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_partial(option: dict, *args):
    """Call the ``_partial_`` constructor of an optimizer/scheduler option on ``args``.

    An option is its YAML as a plain dict: constructor arguments at the top level, next to the
    option's ``name`` and (schedulers) Lightning's stepping keys, which are left out here."""
    skip = ("name", *LIGHTNING_SCHEDULER_KEYS)
    return instantiate({k: v for k, v in option.items() if k not in skip}, _convert_="all")(*args)


class RecurrentTask(pl.LightningModule):
    """Builds ``self.embedding`` and ``self.stack`` from their config dicts (Hydra ``_target_``).

    A task class also tells ``run`` how to feed and finish it, so ``run`` stays generic:
    ``datamodule_class`` batches its data (it names the tokenizer's training texts, is built from
    the config and passes extra constructor arguments via ``task_kwargs()``), and ``generates``
    says whether samples are generated after testing.
    """

    datamodule_class: type | None = None
    generates: bool = False
    #: the number a comparison ranks runs by, and whether lower ("min") or higher ("max") is better
    primary_metric: tuple[str, str] = ("test/loss", "min")

    def __init__(self, vocab_size: int, model: dict, embedding: dict, optimizer: dict | None = None,
                 scheduler: dict | None = None, recurrent_init: str = "default", recurrent_scale: float = 1.0,
                 **_):
        """``optimizer``/``scheduler``: the resolved ``optimizer`` and ``scheduler`` groups (plain dicts,
        saved in the hyper-parameters by the subclass); only training needs them."""
        super().__init__()
        self.embedding = instantiate(plain(embedding), vocab_size=vocab_size)
        self.stack = instantiate(plain(model), input_size=self.embedding.dim)
        init_recurrent(self.stack, recurrent_init, recurrent_scale)  # seqbench.init: default keeps torch's

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Fail before any MLflow run: build the optimizer and scheduler on a dummy parameter, so
        torch's own checks (lr, betas, momentum, mode, ...) speak, as one line naming the option.
        Subclasses add their checks with ``super().check_config(cfg)``."""
        if not float(cfg.optimizer.lr) > 0:
            raise ConfigError(f"optimizer.lr={cfg.optimizer.lr} must be > 0")
        optimizer, scheduler = plain(cfg.optimizer), plain(cfg.scheduler)
        try:
            opt = build_partial(optimizer, [torch.nn.Parameter(torch.zeros(1))])
        except (ValueError, TypeError, InstantiationException) as e:
            raise ConfigError(f"optimizer={optimizer['name']}: {str(e).splitlines()[0]}") from None
        if "_target_" in scheduler:
            try:
                build_partial(scheduler, opt)
            except (ValueError, TypeError, InstantiationException) as e:
                raise ConfigError(f"scheduler={scheduler['name']}: {str(e).splitlines()[0]}") from None

    def configure_optimizers(self):
        """The optimizer option on this module's parameters; with a scheduler, Lightning's dict."""
        optimizer = build_partial(self.hparams.optimizer, self.parameters())
        scheduler = self.hparams.get("scheduler") or {}
        if "_target_" not in scheduler:  # scheduler=none
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": build_partial(scheduler, optimizer),
                                 **{k: scheduler[k] for k in LIGHTNING_SCHEDULER_KEYS if k in scheduler}}}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
