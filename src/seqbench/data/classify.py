"""Classification batching: encoded texts padded to the longest in the batch, with their lengths.

Each split is encoded once with ``datasets.map`` into ``input_ids``; with a cache directory the
encoded split is written to ``<cache>/encoded/<key>.arrow``, ``key`` = (texts of the split,
tokenizer, max_length), so a sweep encodes each (corpus, tokenizer) pair once. A batch is

    x (B, T) token ids, <pad> after each sequence's end;  lengths (B,);  y (B,) labels

and the recurrent stack is run with ``lengths`` (packed), so padding never reaches a state.

Batches are bucketed by length (:class:`seqbench.data.batching.BucketBatchSampler`): a packed recurrence runs for the
longest sequence of its batch, so grouping similar lengths saves most of the steps a random batch
would spend on one long outlier. Under DDP each rank takes every ``world_size``-th batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict

from seqbench.data.batching import BucketedDataModule
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


def pad_batch(items, pad_id: int) -> dict[str, torch.Tensor]:
    """[(ids, label)] -> x (B, T) padded with pad_id, lengths (B,), y (B,)."""
    seqs, labels = zip(*items)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    x = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for row, s in enumerate(seqs):
        x[row, :len(s)] = s
    return {"x": x, "lengths": lengths, "y": torch.stack(labels)}


class ClassificationDataModule(BucketedDataModule):
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

    def bucketed(self, split: str):
        data = self.data[split]
        pad = self.tokenizer.pad_id
        return data, [len(x) for x in data.ids], lambda items: pad_batch(items, pad)
