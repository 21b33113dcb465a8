"""Stanford Sentiment Treebank (Socher et al. 2013) from its PTB-style trees, or from the hub.

Each line of ``train.txt``/``dev.txt``/``test.txt`` is one sentence's binarised parse tree with a
sentiment label 0-4 at every node, e.g. ``(3 (2 It) (4 (2 's) (4 great)))``. The sentence label
is the root's; the text is the leaves joined by single spaces (``-LRB-``/``-RRB-`` back to
parentheses). SST-5 keeps the five classes (8,544 / 1,101 / 2,210 sentences); SST-2 drops the
neutral sentences (label 2) and maps 0-1 -> 0 (negative), 3-4 -> 1 (positive): 6,920 / 872 / 1,821.
Only sentence-level (root) labels are used, not the labelled phrases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict

from seqbench.data.sources import HubCorpus, labelled_dataset
from seqbench.errors import DataError

LEAF = re.compile(r"\((\d+) ([^()\s]+)\)")
PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")"}
SST_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}


def parse_tree(line: str) -> tuple[str, int]:
    """``(3 (2 It) (4 great))`` -> (``"It great"``, 3)."""
    line = line.strip()
    root = re.match(r"\((\d+) ", line)
    leaves = [PTB_ESCAPES.get(w, w) for _, w in LEAF.findall(line)]
    if root is None or not leaves:
        raise ValueError(f"not a labelled PTB tree: {line[:60]!r}")
    return " ".join(leaves), int(root.group(1))


def binary_label(fine: int) -> int | None:
    """SST-2 from SST-5: 0-1 -> 0, 3-4 -> 1, neutral 2 -> dropped (None)."""
    return None if fine == 2 else int(fine > 2)


@dataclass
class SSTCorpus(HubCorpus):
    """SST-5 (``classes: 5``) or SST-2 (``classes: 2``); see the module docstring."""

    classes: int = 5

    def __post_init__(self):
        if self.classes not in (2, 5):
            raise DataError(f"data.classes={self.classes}: SST has 5 (fine-grained) or 2 (binary) classes")

    def load_local(self, path: Path) -> DatasetDict:
        from seqbench.data.text import read_text

        splits = {}
        for split, file in SST_FILES.items():
            texts, labels = [], []
            for n, line in enumerate(read_text(path / file).splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    text, fine = parse_tree(line)
                except ValueError as e:
                    raise DataError(f"{path / file} line {n}: {e}") from None
                label = fine if self.classes == 5 else binary_label(fine)
                if label is not None:
                    texts.append(text)
                    labels.append(label)
            splits[split] = labelled_dataset(texts, labels, self.label_names)
        return DatasetDict(splits)
