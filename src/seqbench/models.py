"""Embeddings and heads around a recurrent stack (``seqbench.cells``)."""

from __future__ import annotations

from torch import Tensor, nn


class LearnedEmbedding(nn.Module):
    """x_t = E[token_t], E trained with the model; dropout on the embedded sequence."""

    def __init__(self, vocab_size: int, dim: int = 64, dropout: float = 0.0, padding_idx: int | None = None,
                 name: str = "learned", **_):
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T) -> (B, T, dim)
        return self.drop(self.embed(tokens))
