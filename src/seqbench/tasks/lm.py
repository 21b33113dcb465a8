"""Autoregressive language model: embedding -> recurrent stack -> linear head over the vocabulary.

Training is truncated backpropagation through time over ordered windows of a contiguous stream;
the hidden state is carried across windows (detached), reset at each epoch. Evaluation sums the
negative log-likelihood over every target token, so

    loss = NLL / tokens,  perplexity = exp(loss),
    bits/char = NLL / (ln 2 * characters),  bits/byte = NLL / (ln 2 * UTF-8 bytes)

with exact character/byte counts of the evaluated text (see ``TrainedTokenizer.encode_stream``).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import SumMetric

from seqbench.cells import detach_state
from seqbench.data.lm import LMDataModule
from seqbench.metrics.agreement import agreement_accuracy
from seqbench.metrics.gradients import GradientProbe
from seqbench.tasks.base import RecurrentTask

EVAL_STAGES = ("val", "test")
SUMS = ("nll", "tokens", "chars", "bytes", "unk")


def lm_metrics(totals: dict[str, float]) -> dict[str, float]:
    """The held-out metrics of the module docstring from the sums over a whole split (``SUMS``);
    shared with the count-based ``task=ngram`` so the two report the same numbers the same way."""
    loss = totals["nll"] / totals["tokens"]
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_char": totals["nll"] / (math.log(2) * max(totals["chars"], 1)),
            "bits_per_byte": totals["nll"] / (math.log(2) * max(totals["bytes"], 1)),
            "tokens": totals["tokens"],
            "unk_rate": totals["unk"] / totals["tokens"]}  # share of targets that are <unk>


def eval_sums(nll: Tensor, batch: dict, unk_id: int | None) -> dict:
    """One window's contribution to ``SUMS``: per-target NLL (B, T) and the batch's targets,
    characters and bytes."""
    return {"nll": nll.sum(), "tokens": nll.numel(), "chars": batch["chars"].sum(), "bytes": batch["bytes"].sum(),
            "unk": 0 if unk_id is None else (batch["y"] == unk_id).sum()}


class HeldOutEvaluation:
    """Lightning's validation/test hooks for a language model whose subclass accumulates a split's
    sums in ``_eval_start/_eval_step/_eval_end(stage)``; after testing, on the agreement grammar,
    the accuracy by distance (shared by the neural LM and the count-based ``task=ngram``)."""

    def on_validation_epoch_start(self):
        self._eval_start("val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_start(self):
        self._eval_start("test")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        self._eval_end("test")
        data = getattr(self.trainer, "datamodule", None)  # agreement grammar only: acc by distance
        if self.trainer.is_global_zero and isinstance(data, LMDataModule):
            for k, v in agreement_accuracy(self, data.tokenizer, data.corpus["test"]["text"], data.separator).items():
                self.log(f"test/{k}", v, rank_zero_only=True)


class LanguageModel(HeldOutEvaluation, GradientProbe, RecurrentTask):
    datamodule_class = LMDataModule
    generates = True
    unidirectional_because = ("task=lm generates left to right, and a backward direction would see the "
                              "tokens it predicts (bidirectional models belong to task=classify)")
    carried_state_because = "task=lm trains with truncated BPTT, carrying the state between windows"
    primary_metric = ("test/bits_per_char", "min")
    secondary_metrics = ("test/perplexity", "val/best_loss", "test/unk_rate", "sample/grammatical_rate",
                         "test/agreement_acc")
    curve_metric = "val/bits_per_char"
    summary_metrics = ("val/bits_per_char", "test/bits_per_byte", "sample/distinct_2", "sample/repetition_4")

    def __init__(self, vocab_size: int, model: dict, embedding: dict, head_dropout: float = 0.0,
                 unk_id: int | None = None, **task_options):
        super().__init__(vocab_size, model, embedding, **task_options)
        self.save_hyperparameters(logger=False)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.stack.output_size, vocab_size)
        self.sums = nn.ModuleDict({f"{stage}_{k}": SumMetric() for stage in EVAL_STAGES for k in SUMS})
        self._carry = {}
        self._tokens_seen, self._epoch_start = 0, 0.0

    # -- model -------------------------------------------------------------------------------
    def forward(self, tokens: Tensor, state=None):
        """tokens (B, T) -> logits (B, T, V), final state."""
        out, state = self.stack(self.embedding(tokens), state)
        return self.head(self.head_drop(out)), state

    def step(self, tokens: Tensor, state=None):
        """Incremental decoding interface: same as forward, in eval mode by the caller."""
        return self(tokens, state)

    def probe_inputs(self, batch):
        """Gradient-flow probe on one window: the loss is the NLL of its last target token."""
        y_last = batch["y"][:, -1]
        return self.embedding(batch["x"]), lambda h: F.cross_entropy(self.head(h), y_last, reduction="none")

    def _window(self, batch, stage: str) -> Tensor:
        """Per-token NLL (B, T) of one window, carrying the state of the previous window."""
        logits, state = self(batch["x"], self._carry.get(stage))
        self._carry[stage] = detach_state(state)
        return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), reduction="none")

    # -- training ----------------------------------------------------------------------------
    def on_train_epoch_start(self):
        self._carry.pop("train", None)
        self._tokens_seen, self._epoch_start = 0, time.perf_counter()

    def training_step(self, batch, batch_idx):
        loss = self._window(batch, "train").mean()
        self._tokens_seen += batch["y"].numel()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def on_train_epoch_end(self):
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/tokens_per_s", self._tokens_seen * self.trainer.world_size / elapsed,
                     rank_zero_only=True)

    # -- evaluation --------------------------------------------------------------------------
    def _eval_start(self, stage):
        self._carry.pop(stage, None)

    def _eval_step(self, batch, stage):
        nll = self._window(batch, stage)
        for k, v in eval_sums(nll, batch, self.hparams.get("unk_id")).items():
            self.sums[f"{stage}_{k}"].update(torch.as_tensor(v, dtype=torch.float64))

    def _eval_end(self, stage):
        totals = {k: self.sums[f"{stage}_{k}"].compute().item() for k in SUMS}  # synced over ranks
        for k in SUMS:
            self.sums[f"{stage}_{k}"].reset()
        if totals["tokens"] == 0:
            return
        for k, v in lm_metrics(totals).items():
            self.log(f"{stage}/{k}", v, prog_bar=k == "loss", sync_dist=False)

