"""Length-bucketed batches shared by the classification and long-range datamodules.

A packed recurrence runs for the longest sequence of its batch, so grouping similar lengths saves
most of the steps a random batch would spend on one long outlier. Under DDP each rank takes every
``world_size``-th batch, the same count on every rank.
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Sampler


class BucketBatchSampler(Sampler):
    """Batches of indices with similar lengths, in a seeded random order that changes per epoch.

    Training: shuffle, cut into pools of ``pool`` batches, sort each pool by length, cut it into
    batches, shuffle the batches; pass ``e`` over the sampler is seeded by (seed, e). Evaluation
    (``shuffle=False``): sort the whole split by length.
    Rank ``r`` of ``world_size`` reads batches r, r + world_size, ... (the same count on every
    rank: the last few batches are dropped if they do not divide evenly, in training only).
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pool: int = 50):
        self.lengths, self.batch_size, self.shuffle = lengths, batch_size, shuffle
        self.seed, self.rank, self.world_size, self.pool = seed, rank, world_size, pool
        self.epoch = 0  # passes started so far

    def batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))

        def by_length(idx):
            return sorted(idx, key=lambda i: self.lengths[i])

        if not self.shuffle:
            order = by_length(order)
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(f"{self.seed}/{self.epoch}")
        rng.shuffle(order)
        size = self.batch_size * self.pool
        out = []
        for start in range(0, len(order), size):
            pool = by_length(order[start:start + size])
            out += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(out)
        if self.world_size > 1:
            out = out[:len(out) - len(out) % self.world_size] or out
        return out

    def __iter__(self):
        batches = self.batches()[self.rank::self.world_size]
        self.epoch += 1
        yield from batches

    def __len__(self) -> int:
        return len(self.batches()[self.rank::self.world_size])



class BucketedDataModule(pl.LightningDataModule):
    """Train/validation/test loaders of length-bucketed batches. Subclasses set ``batch_size``,
    ``eval_batch_size`` and ``seed``, fill splits in :meth:`setup` and say in :meth:`bucketed` what
    a split's items are, their lengths and how a batch of them is collated."""

    def bucketed(self, split: str):
        """-> (indexable items, their lengths, collate_fn) of a set-up split."""
        raise NotImplementedError

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        items, lengths, collate = self.bucketed(split)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = BucketBatchSampler(lengths, batch_size, shuffle, self.seed, rank, world)
        return DataLoader(items, batch_sampler=sampler, num_workers=0, collate_fn=collate)

    def train_dataloader(self):
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, shuffle=False)
