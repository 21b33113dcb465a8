"""Lightning callbacks seqbench adds to every Trainer."""

from __future__ import annotations

import math
import time

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


class TimeToBest(pl.Callback):
    """Seconds of fitting (training and validation, from the start of ``fit``) until the
    validation check whose checkpoint is tested: the best value of ``monitor`` (``mode`` "min" or
    "max"), ties going to the earlier check, as ModelCheckpoint keeps it. What a converged row
    cost to reach its result, beside the run's whole wall time (which includes the epochs early
    stopping waits through). Without any validation check: the whole fit."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.seconds: float | None = None
        self.start = 0.0

    def on_fit_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        value = float(value)
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.seconds = value, time.perf_counter() - self.start

    def on_fit_end(self, trainer, pl_module):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.start
