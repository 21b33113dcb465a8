"""Lightning callbacks seqbench adds to every Trainer."""

from __future__ import annotations

import math

import lightning.pytorch as pl

from seqbench.errors import SeqbenchError


class DivergenceError(SeqbenchError):
    """Training loss became NaN or infinite: the run stops early and is recorded as FAILED."""


class DivergenceMonitor(pl.Callback):
    """Stop a run at the first training loss that is NaN, infinite or above ``max_loss``
    (a sweep then moves on to the next job)."""

    def __init__(self, max_loss: float = 1e4):
        self.max_loss = max_loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # a step without a loss (task=ngram counts)
            return
        value = float(loss)
        if not math.isfinite(value) or value > self.max_loss:
            raise DivergenceError(f"training diverged at epoch {trainer.current_epoch} step "
                                  f"{trainer.global_step}: loss={value:.4g} (limit max_loss={self.max_loss:g})")
