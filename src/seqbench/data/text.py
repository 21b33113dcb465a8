"""Plain-text corpora: one local file split contiguously, or the same corpus's splits on the hub."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict

from seqbench.data.sources import Corpus, load_hub, normalise_splits
from seqbench.errors import DataError


def read_text(path: str | Path, *, url: str | None = None, variable: str = "SEQBENCH_DATA_DIR") -> str:
    """Read a UTF-8 corpus file with clear errors for missing, empty or undecodable files."""
    path = Path(path)
    if not path.is_file():
        hint = f" or download it from {url}" if url else ""
        raise DataError(f"corpus file not found: {path} (set {variable} to the folder holding it, "
                        f"e.g. {variable}=../shared/data, or pass data.path=/abs/file{hint})")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"corpus file {path} is not valid UTF-8: undecodable byte {raw[e.start]:#04x} "
                        f"at offset {e.start}") from None
    if not text.strip():
        raise DataError(f"corpus file {path} is empty")
    return text


def d2l_normalize(text: str) -> str:
    """d2l's Time Machine preprocessing: lower-case, anything but letters becomes a space."""
    return "\n".join(re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.splitlines())


@dataclass
class LocalTextCorpus(Corpus):
    """One text file, split contiguously: train = head, then validation, then test (the tail).

    With a ``hub_id``, a missing local file falls back to that hub dataset's own splits (Tiny
    Shakespeare's hub copy has the same contiguous 90/5/5 split).
    """

    name: str = "text"
    path: str | None = None
    url: str | None = None
    normalize: str = "none"          # none | d2l
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    hub_id: str | None = None
    hub_config: str | None = None

    def load(self) -> DatasetDict:
        if self.hub_id and not (self.path and Path(self.path).is_file()):
            corpus = normalise_splits(load_hub(self.name, self.hub_id, self.hub_config, self.path))
            return DatasetDict({s: Dataset.from_dict({"text": [self._normalise(t) for t in ds["text"]]})
                                for s, ds in corpus.items()})
        if self.path is None:
            raise DataError(f"data={self.name}: no data.path given")
        text = self._normalise(read_text(self.path, url=self.url))
        n = len(text)
        b = n - round(n * self.test_fraction)      # test: the last test_fraction of the text
        a = b - round(n * self.val_fraction)       # validation: the val_fraction before it
        parts = {"train": text[:a], "validation": text[a:b], "test": text[b:]}
        return DatasetDict({k: Dataset.from_dict({"text": [v]}) for k, v in parts.items()})

    def _normalise(self, text: str) -> str:
        return d2l_normalize(text) if self.normalize == "d2l" else text
