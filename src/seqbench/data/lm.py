"""Language-model batching: contiguous token streams cut into truncated-BPTT windows.

A split's text becomes one token stream, laid out as ``C = batch_size * world_size`` parallel
columns of equal length (the tail that does not fill a column is dropped). Rank ``r`` reads
columns ``r*B .. (r+1)*B``, so DDP ranks see disjoint text. Window ``i`` is
``x = cols[:, i*bptt : (i+1)*bptt]`` with targets shifted by one token; windows are served in
order so the task can carry the hidden state from one window to the next.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader, Dataset

from seqbench.errors import DataError
from seqbench.tokenizers import TrainedTokenizer


class StreamWindows(Dataset):
    """Item ``i``: dict of (B, <=bptt) tensors ``x``, ``y`` and the characters/bytes of each target."""

    def __init__(self, stream: dict[str, torch.Tensor], batch_size: int, bptt: int,
                 rank: int = 0, world_size: int = 1, split: str = "train"):
        ids = stream["ids"]
        columns = batch_size * world_size
        self.seg = (len(ids) - 1) // columns
        if self.seg < 2:
            raise DataError(f"the {split} split has {len(ids)} tokens: too few for {columns} streams "
                            f"(batch_size={batch_size} x world_size={world_size}); use a smaller batch size")
        self.bptt = bptt
        rows = slice(rank * batch_size, (rank + 1) * batch_size)

        def lay_out(t: torch.Tensor, shift: int) -> torch.Tensor:
            return t[shift:shift + columns * self.seg].view(columns, self.seg)[rows].contiguous()

        self.x = lay_out(ids, 0)
        self.y = lay_out(ids, 1)
        self.chars = lay_out(stream["chars"], 1)
        self.bytes = lay_out(stream["bytes"], 1)

    def __len__(self) -> int:
        return math.ceil(self.seg / self.bptt)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = slice(i * self.bptt, (i + 1) * self.bptt)
        return {"x": self.x[:, s], "y": self.y[:, s], "chars": self.chars[:, s], "bytes": self.bytes[:, s]}


class LMDataModule(pl.LightningDataModule):
    """Splits of a DatasetDict (column ``text``) -> ordered truncated-BPTT windows."""

    splits = ("train", "validation", "test")
    #: texts of a split are joined into one stream with this separator
    separator = "\n"

    def __init__(self, corpus: DatasetDict, tokenizer: TrainedTokenizer, batch_size: int = 32,
                 eval_batch_size: int = 16, bptt: int = 64):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self.batch_size, self.eval_batch_size, self.bptt = batch_size, eval_batch_size, bptt
        self.streams: dict[str, dict[str, torch.Tensor]] = {}

    # -- what run.build asks of every datamodule ------------------------------------------------
    @classmethod
    def tokenizer_texts(cls, corpus: DatasetDict) -> list[str]:
        """The training split as the stream reads it (texts joined by the separator): the
        tokenizer (and word2vec) train on exactly that, and nothing else."""
        return [t + cls.separator for t in corpus["train"]["text"]]

    @classmethod
    def from_config(cls, cfg, corpus: DatasetDict, tokenizer: TrainedTokenizer):
        task = cfg.task
        return cls(corpus, tokenizer, task.batch_size, task.eval_batch_size, task.bptt)

    def task_kwargs(self) -> dict:
        """Extra constructor arguments of the task module: the <unk> id (unk rate)."""
        return {"unk_id": self.tokenizer.unk_id}

    def split_text(self, split: str) -> str:
        return self.separator.join(self.corpus[split]["text"])

    def stream(self, split: str) -> dict[str, torch.Tensor]:
        if split not in self.streams:
            self.streams[split] = self.tokenizer.encode_stream(self.split_text(split))
        return self.streams[split]

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        windows = StreamWindows(self.stream(split), batch_size, self.bptt, rank, world, split)
        return DataLoader(windows, batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self):
        return self._loader("train", self.batch_size)

    def val_dataloader(self):
        return self._loader("validation", self.eval_batch_size)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size)


class CountingDataModule(LMDataModule):
    """The LM's batching for a count-based model (``task=ngram``): validation and test are exactly
    the LM's windows (same targets, characters and bytes, hence comparable numbers), and training
    is one batch ``{"ids": (1, N)}``: the whole training stream, counted in one pass."""

    @classmethod
    def from_config(cls, cfg, corpus: DatasetDict, tokenizer: TrainedTokenizer):
        return cls(corpus, tokenizer, 1, cfg.task.eval_batch_size, cfg.task.bptt)

    def train_dataloader(self):
        return DataLoader([{"ids": self.stream("train")["ids"][None]}], batch_size=None, shuffle=False,
                          num_workers=0)
