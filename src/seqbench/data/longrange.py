"""Batching for the long-range benchmarks (:mod:`seqbench.data.synthetic_longrange`): numbers, not text.

The generators' columns become tensors once (``with_format("numpy")[:]``: whole columns at once),
all sequences of a split have the same length, and batches are drawn like the classification
batches (seeded shuffle per epoch; under DDP rank ``r`` takes every ``world_size``-th batch)::

    adding  x (B, T, 2) float: (value u_t, marker m_t);  y (B,) float: sum_t m_t u_t
    copy    x (B, T) long: symbols 0..K+1 (blank, K symbols, delimiter);  y (B, T) long: 0..K

There is nothing to tokenize: :meth:`tokenizer_texts` returns a tiny fixed text, so the generic
tokenizer step of ``run.build`` stays harmless (its ``tokenizer.json`` is still logged, unused).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from datasets import DatasetDict

from seqbench.data.batching import BucketedDataModule

#: what the tokenizer trains on for numeric tasks: the characters of the generators' ``text`` view
FIXED_TEXT = ["_abcdefghijklmnopqrstuvwxyz:0123456789"]


class ArrayDataModule(BucketedDataModule):
    """Splits of equal-length arrays -> dict batches ``{"x", "y"}``; subclasses define :meth:`arrays`."""

    splits = ("train", "validation", "test")

    def __init__(self, corpus: DatasetDict, batch_size: int = 32, eval_batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.corpus, self.batch_size, self.eval_batch_size, self.seed = corpus, batch_size, eval_batch_size, seed
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- what run.build asks of every datamodule ------------------------------------------------
    @staticmethod
    def tokenizer_texts(corpus: DatasetDict) -> list[str]:
        return list(FIXED_TEXT)

    @classmethod
    def from_config(cls, cfg, corpus: DatasetDict, tokenizer=None):
        return cls(corpus, cfg.task.batch_size, cfg.task.eval_batch_size, cfg.seed)

    def task_kwargs(self) -> dict:
        return {}

    # -- tensors ----------------------------------------------------------------------------------
    def arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits:
            if split not in self.data:
                self.data[split] = self.arrays(split)

    def bucketed(self, split: str):
        x, y = self.data[split]
        return range(len(x)), [x.shape[1]] * len(x), lambda idx: {"x": x[idx], "y": y[idx]}


class AddingDataModule(ArrayDataModule):
    """Adding problem: x = (u_t, m_t) per step, y = the sum of the two marked values."""

    def arrays(self, split):
        ds = self.corpus[split].with_format("numpy")[:]
        x = np.stack([ds["values"], ds["markers"]], axis=-1).astype(np.float32)   # (N, T, 2)
        return torch.from_numpy(x), torch.from_numpy(np.asarray(ds["target"], dtype=np.float32))


class CountDataModule(ArrayDataModule):
    """Counting ones as regression: x = the bits (one channel), y = their count."""

    def arrays(self, split):
        ds = self.corpus[split].with_format("numpy")[:]
        x = np.asarray(ds["bits"], dtype=np.float32)[..., None]                  # (N, T, 1)
        return torch.from_numpy(x), torch.from_numpy(np.asarray(ds["target"], dtype=np.float32))


class CopyDataModule(ArrayDataModule):
    """Copy memory: input symbols and per-step target symbols. ``task_kwargs`` tells the task the
    alphabet and the delays (its vocabulary, head and baseline depend on them)."""

    def __init__(self, corpus: DatasetDict, batch_size: int = 32, eval_batch_size: int = 256, seed: int = 0,
                 num_symbols: int = 8, copy_length: int = 10):
        super().__init__(corpus, batch_size, eval_batch_size, seed)
        self.num_symbols, self.copy_length = num_symbols, copy_length

    @classmethod
    def from_config(cls, cfg, corpus: DatasetDict, tokenizer=None):
        return cls(corpus, cfg.task.batch_size, cfg.task.eval_batch_size, cfg.seed,
                   cfg.data.num_symbols, cfg.data.copy_length)

    def arrays(self, split):
        ds = self.corpus[split].with_format("numpy")[:]
        return (torch.from_numpy(np.asarray(ds["inputs"], dtype=np.int64)),
                torch.from_numpy(np.asarray(ds["targets"], dtype=np.int64)))

    def task_kwargs(self) -> dict:
        T = len(self.corpus["train"][0]["inputs"])
        return {"num_symbols": self.num_symbols, "copy_length": self.copy_length,
                "delay": T - 2 * self.copy_length}


def copy_baseline(num_symbols: int, copy_length: int, delay: int) -> float:
    """Cross-entropy per step of the memoryless strategy on copy memory: blanks where the target is
    blank (cost 0), uniform over the K symbols at the ``copy_length`` recall steps (cost ln K each),

        CE = copy_length * ln K / (delay + 2 * copy_length)      (10 ln 8 / (T + 20) in the issue)
    """
    return copy_length * math.log(num_symbols) / (delay + 2 * copy_length)


#: MSE of the trivial predictor y = 1 on the adding problem: Var(u1 + u2) = 2 * (1/12) = 1/6
ADDING_BASELINE_MSE = 1.0 / 6.0
