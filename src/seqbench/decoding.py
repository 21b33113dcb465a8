"""Decoding strategies: turn a language model's next-token distribution into text.

A strategy works on a batch of prompts at once through the model's incremental interface
``logits, state = model.step(tokens (B, T), state)`` and never re-runs a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqbench.errors import ConfigError


@dataclass
class DecodingStrategy:
    """Base: subclasses choose the next token from logits (B, V); ``generate`` runs the loop."""

    name: str = "base"

    def next_token(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, model, prompt: Tensor, max_new_tokens: int,
                 generator: torch.Generator | None = None, eos_id: int | None = None) -> Tensor:
        """prompt (B, P) -> new tokens (B, max_new_tokens); after ``eos_id`` a row repeats it."""
        logits, state = model.step(prompt, None)
        logits = logits[:, -1]
        out = []
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
        for _ in range(max_new_tokens):
            token = self.next_token(logits.float(), generator)
            if eos_id is not None:
                token = torch.where(done, torch.full_like(token, eos_id), token)
                done |= token == eos_id
            out.append(token)
            logits, state = model.step(token[:, None], state)
            logits = logits[:, -1]
        return torch.stack(out, dim=1)


@dataclass
class Greedy(DecodingStrategy):
    """y_t = argmax_v p(v | y_<t)."""

    name: str = "greedy"

    def next_token(self, logits, generator):
        return logits.argmax(dim=-1)


@dataclass
class Sample(DecodingStrategy):
    """y_t ~ softmax(logits / temperature); temperature -> 0 approaches greedy."""

    name: str = "sample"
    temperature: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ConfigError(f"decoding.temperature={self.temperature} must be > 0 "
                              f"(use decoding=greedy for the argmax limit)")

    def next_token(self, logits, generator):
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
