"""What every task module shares: the embedding -> recurrent stack encoder and the optimizer."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from seqbench.errors import instantiate
from omegaconf import DictConfig, OmegaConf

from seqbench.errors import choice_error
from seqbench.init import init_recurrent

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def plain(cfg) -> dict:
    """DictConfig -> plain dict (checkpoint hyper-parameters must load with weights_only=True)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class RecurrentTask(pl.LightningModule):
    """Builds ``self.embedding`` and ``self.stack`` from their config dicts (Hydra ``_target_``).

    A task class also tells ``run`` how to feed and finish it, so ``run`` stays generic:
    ``datamodule_class`` batches its data (it names the tokenizer's training texts, is built from
    the config and passes extra constructor arguments via ``task_kwargs()``), and ``generates``
    says whether samples are generated after testing.
    """

    datamodule_class: type | None = None
    generates: bool = False

    def __init__(self, vocab_size: int, model: dict, embedding: dict, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.0,
                 recurrent_init: str = "default", recurrent_scale: float = 1.0, **_):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise choice_error("task.optimizer", optimizer, OPTIMIZERS)
        self.embedding = instantiate(plain(embedding), vocab_size=vocab_size)
        self.stack = instantiate(plain(model), input_size=self.embedding.dim)
        init_recurrent(self.stack, recurrent_init, recurrent_scale)  # seqbench.init: default keeps torch's

    def configure_optimizers(self):
        hp = self.hparams
        kwargs = {"lr": hp.lr, "weight_decay": hp.weight_decay}
        if hp.optimizer == "sgd":
            kwargs["momentum"] = hp.momentum
        return OPTIMIZERS[hp.optimizer](self.parameters(), **kwargs)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
