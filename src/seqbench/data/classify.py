"""Classification batching: encoded texts padded to the longest in the batch, with their lengths.

Each split is encoded once with ``datasets.map`` into ``input_ids``; with a cache directory the
encoded split is written to ``<cache>/encoded/<key>.arrow``, ``key`` = (texts of the split,
tokenizer, max_length), so a sweep encodes each (corpus, tokenizer) pair once. A batch is

    x (B, T) token ids, <pad> after each sequence's end;  lengths (B,);  y (B,) labels

and the recurrent stack is run with ``lengths`` (packed), so padding never reaches a state.

Batches are bucketed by length (:class:`BucketBatchSampler`): a packed recurrence runs for the
longest sequence of its batch, so grouping similar lengths saves most of the steps a random batch
would spend on one long outlier. Under DDP each rank takes every ``world_size``-th batch.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import lightning.pytorch as pl
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader, Sampler

from seqbench.tokenizers import TrainedTokenizer, corpus_fingerprint


class Encoded(torch.utils.data.Dataset):
    """Token id tensors and labels of one split, in memory."""

    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids = [torch.tensor(x, dtype=torch.long) for x in ids]
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], self.labels[i]


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


def pad_batch(items, pad_id: int) -> dict[str, torch.Tensor]:
    """[(ids, label)] -> x (B, T) padded with pad_id, lengths (B,), y (B,)."""
    seqs, labels = zip(*items)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    x = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        x[row, :len(s)] = s
    return {"x": x, "lengths": lengths, "y": torch.stack(labels)}


class ClassificationDataModule(pl.LightningDataModule):
    """Splits of a DatasetDict (``text``, ``label``) -> shuffled padded batches with lengths."""

    splits = ("train", "validation", "test")

    def __init__(self, corpus: DatasetDict, tokenizer: TrainedTokenizer, batch_size: int = 32,
                 eval_batch_size: int = 64, max_length: int | None = None,
                 cache_dir: str | Path | None = None, seed: int = 0):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.max_length, self.cache_dir, self.seed = max_length, cache_dir, seed
        self.data: dict[str, Encoded] = {}

    # -- what run.build asks of every datamodule ------------------------------------------------
    @staticmethod
    def tokenizer_texts(corpus: DatasetDict) -> list[str]:
        """The texts the tokenizer (and word2vec) train on: the training split only."""
        return list(corpus["train"]["text"])

    @classmethod
    def from_config(cls, cfg, corpus: DatasetDict, tokenizer: TrainedTokenizer):
        task = cfg.task
        return cls(corpus, tokenizer, task.batch_size, task.eval_batch_size, task.get("max_length"),
                   cfg.paths.get("cache_dir"), cfg.seed)

    @property
    def num_classes(self) -> int:
        return self.corpus["train"].features["label"].num_classes

    def task_kwargs(self) -> dict:
        return {"num_classes": self.num_classes}

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, split: str) -> Dataset:
        """``datasets.map``: text -> input_ids (truncated to max_length; an empty text is <bos>)."""
        ds, tok, max_length = self.corpus[split], self.tokenizer, self.max_length

        def encode_batch(batch):
            ids = [x[:max_length] if max_length else x for x in tok.encode_batch(batch["text"])]
            return {"input_ids": [x or [tok.bos_id] for x in ids]}

        key = hashlib.sha256(f"{corpus_fingerprint(ds['text'])}/{tok.fingerprint()}/{max_length}".encode()
                             ).hexdigest()[:16]
        cache_file = None
        if self.cache_dir is not None:
            folder = Path(self.cache_dir) / "encoded"
            folder.mkdir(parents=True, exist_ok=True)
            cache_file = str(folder / f"{split}-{key}.arrow")
        return ds.map(encode_batch, batched=True, batch_size=1000, remove_columns=["text"],
                      cache_file_name=cache_file, load_from_cache_file=True, new_fingerprint=key,
                      desc=None, keep_in_memory=cache_file is None)

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits:
            if split not in self.data:
                enc = self.encode(split)
                self.data[split] = Encoded(enc["input_ids"], enc["label"])

    # -- loaders ----------------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        data = self.data[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = BucketBatchSampler([len(x) for x in data.ids], batch_size, shuffle, self.seed, rank, world)
        pad = self.tokenizer.pad_id
        return DataLoader(data, batch_sampler=sampler, num_workers=0,
                          collate_fn=lambda items: pad_batch(items, pad))

    def train_dataloader(self):
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self):
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, shuffle=False)
