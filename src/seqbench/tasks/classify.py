"""Sequence classification: embedding -> recurrent stack -> linear head on the final state.

A padded batch is run through the stack with its ``lengths`` (packed), so the final state of each
direction is the state at the sequence's true end: the forward direction after its last token,
the backward direction after its first. The head reads the top layer's final states of every
direction, concatenated (D * H features), and gives class logits:

    h = [h_T^fwd ; h_1^bwd]   (bidirectional)   or   h_T   (unidirectional)
    p(y | x) = softmax(W h + b)

Trained with cross-entropy; reports loss, accuracy and macro-F1 (torchmetrics) on val/test.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqbench.data.classify import ClassificationDataModule
from seqbench.errors import ConfigError
from seqbench.tasks.base import RecurrentTask

STAGES = ("train", "val", "test")


def top_layer_final(state, num_layers: int, num_directions: int) -> Tensor:
    """Final state (L*D, B, H) [or (h, c)] -> the top layer's h of every direction, (B, D*H).

    Rows are layer-major (row = layer * D + direction, torch's layout), so the top layer is the
    last D rows."""
    h = state[0] if isinstance(state, tuple) else state
    top = h.view(num_layers, num_directions, *h.shape[1:])[-1]      # (D, B, H)
    return top.transpose(0, 1).reshape(top.shape[1], -1)            # (B, D*H)


class Classifier(RecurrentTask):
    datamodule_class = ClassificationDataModule
    generates = False
    primary_metric = ("test/accuracy", "max")
    secondary_metrics = ("test/f1_macro", "val/accuracy")
    curve_metric = "val/accuracy"
    selection_metrics = {"loss": "min", "accuracy": "max", "f1_macro": "max"}

    def __init__(self, vocab_size: int, model: dict, embedding: dict, num_classes: int,
                 head_dropout: float = 0.0, **task_options):
        super().__init__(vocab_size, model, embedding, **task_options)
        self.save_hyperparameters(logger=False)
        if num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, the data has {num_classes}")
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.stack.output_size, num_classes))
        # keyed "<stage>_<metric>" (a ModuleDict key "train" would shadow nn.Module.train)
        self.metrics = nn.ModuleDict({f"{s}_accuracy": MulticlassAccuracy(num_classes, average="micro")
                                      for s in STAGES})
        self.metrics.update({f"{s}_f1_macro": MulticlassF1Score(num_classes, average="macro") for s in STAGES})
        self._examples, self._epoch_start = 0, 0.0

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """tokens (B, T), lengths (B,) -> class logits (B, num_classes)."""
        _, state = self.stack(self.embedding(tokens), lengths=lengths)
        return self.head(top_layer_final(state, self.stack.num_layers, self.stack.num_directions))

    def _step(self, batch, stage: str) -> Tensor:
        logits = self(batch["x"], batch["lengths"])
        loss = F.cross_entropy(logits, batch["y"])
        preds = logits.argmax(-1)
        accuracy, f1 = self.metrics[f"{stage}_accuracy"], self.metrics[f"{stage}_f1_macro"]
        accuracy(preds, batch["y"])
        n = batch["y"].numel()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=n)
        self.log(f"{stage}/accuracy", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train",
                 batch_size=n)
        if stage != "train":  # macro-F1 on held-out data only
            f1(preds, batch["y"])
            self.log(f"{stage}/f1_macro", f1, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_start(self):
        self._examples, self._epoch_start = 0, time.perf_counter()

    def training_step(self, batch, batch_idx):
        self._examples += batch["y"].numel()
        return self._step(batch, "train")

    def on_train_epoch_end(self):
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0:
            self.log("train/examples_per_s", self._examples * self.trainer.world_size / elapsed,
                     rank_zero_only=True)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    @torch.no_grad()
    def predict(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Predicted class per sequence (B,)."""
        return self(tokens, lengths).argmax(-1)
