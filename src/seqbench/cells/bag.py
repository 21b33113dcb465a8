"""Bag of embeddings: no recurrence at all, the reference row that asks whether word order (and a
recurrent cell) helps. The sequence is summarised by the mean of its input vectors:

    h_t = (1 / t) * sum_{s <= t} x_s        output: every prefix's mean, (B, T, I)
    h   = h_n, n = the sequence's length    final state (1, B, I): what a classifier's head reads

So ``task=classify model=boe`` is the classic "mean of embeddings -> linear" baseline (the model
the IMDb "LSTM" of the notebook this project replaced actually measured (pipelines/reproduce/imdb.yaml): an ``EmbeddingBag`` mean). Its width is the input's
(``hidden_size`` is ignored) and it has no parameters of its own. It carries no state across
windows, so it is refused where a task needs one (language modelling with truncated BPTT).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqbench.cells import register_scratch
from seqbench.cells.base import RecurrentStack
from seqbench.errors import ConfigError


@register_scratch("boe")
class BagOfEmbeddings(RecurrentStack):
    carries_state = False  # nothing to resume from: each call averages its own input

    def __init__(self, input_size: int, hidden_size: int | None = None, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, **_):
        if num_layers != 1 or bidirectional:
            raise ConfigError("model=boe is one mean over the sequence: it has no layers or directions "
                              "(num_layers=1, bidirectional=false)")
        super().__init__(input_size, input_size, 1, False, dropout)

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T, _ = x.shape
        steps = torch.arange(1, T + 1, device=x.device, dtype=x.dtype)
        if lengths is None:
            lengths = torch.full((B,), T, device=x.device, dtype=torch.long)
        mask = (steps[None, :] <= lengths.to(x.device)[:, None]).to(x.dtype)  # (B, T)
        sums = (x * mask[..., None]).cumsum(1)
        out = sums / steps[None, :, None] * mask[..., None]
        final = sums[torch.arange(B, device=x.device), lengths.to(x.device) - 1] / lengths.to(x.device, x.dtype)[:, None]
        return out, final.unsqueeze(0)
