"""Plain-text corpora read from local files (offline) with HF ``datasets``' text builder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict

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
class LocalTextCorpus:
    """One text file, split contiguously: train = head, then validation, then test (the tail)."""

    path: str
    name: str = "text"
    url: str | None = None
    normalize: str = "none"          # none | d2l
    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def __call__(self) -> DatasetDict:
        text = read_text(self.path, url=self.url)
        if self.normalize == "d2l":
            text = d2l_normalize(text)
        n = len(text)
        a = int(n * (1 - self.val_fraction - self.test_fraction))
        b = int(n * (1 - self.test_fraction))
        parts = {"train": text[:a], "validation": text[a:b], "test": text[b:]}
        return DatasetDict({k: Dataset.from_dict({"text": [v]}) for k, v in parts.items()})
