"""Stanford Sentiment Treebank (Socher et al. 2013) from its PTB-style trees, or from the hub.

Each line of ``train.txt``/``dev.txt``/``test.txt`` is one sentence's binarised parse tree with a
sentiment label 0-4 at every node, e.g. ``(3 (2 It) (4 (2 's) (4 great)))``. The sentence label
is the root's; the text is the leaves joined by single spaces (``-LRB-``/``-RRB-`` back to
parentheses). SST-5 keeps the five classes (8,544 / 1,101 / 2,210 sentences); SST-2 drops the
neutral sentences (label 2) and maps 0-1 -> 0 (negative), 3-4 -> 1 (positive): 6,920 / 872 / 1,821.

``train_phrases: true`` trains on every labelled phrase of the training trees instead (Socher et
al. 2013, Tai et al. 2015, Kim 2014): each node's span with its own label, neutral ones dropped for
SST-2, each distinct phrase once (first occurrence's label; the treebank labels a phrase text
once). Validation and test stay sentence-level (roots), as the papers report them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict

from seqbench.data.sources import HubCorpus, labelled_dataset
from seqbench.errors import DataError

#: PTB escapes in the leaves: brackets, and backslash-escaped slash and star ("2 1\\/2" is "2 1/2")
PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "\\/": "/", "\\*": "*"}
SST_FILES = {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}


def parse_tree(line: str) -> tuple[str, int]:
    """``(3 (2 It) (4 great))`` -> (``"It great"``, 3): the root of :func:`parse_phrases`."""
    return parse_phrases(line)[0]


def parse_phrases(line: str) -> list[tuple[str, int]]:
    """Every node of a tree as (span text, label), root first:
    ``(3 (2 It) (4 great))`` -> [("It great", 3), ("It", 2), ("great", 4)]."""
    tokens = re.findall(r"\(|\)|[^()\s]+", line)
    phrases: list[tuple[str, int]] = []

    def node(i: int) -> tuple[list[str], int]:  # tokens[i] == "(": parse one node, return its words
        label, i = int(tokens[i + 1]), i + 2
        slot = len(phrases)
        phrases.append(("", label))
        words: list[str] = []
        while tokens[i] != ")":
            if tokens[i] == "(":
                child, i = node(i)
                words += child
            else:  # a leaf may hold several words ("(2 2 1\\/2)")
                words.append(re.sub(r"-LRB-|-RRB-|\\/|\\\*", lambda m: PTB_ESCAPES[m.group()], tokens[i]))
                i += 1
        phrases[slot] = (" ".join(words), label)
        return words, i + 1

    try:
        if not tokens or tokens[0] != "(":
            raise ValueError
        node(0)
    except (IndexError, ValueError):
        raise ValueError(f"not a labelled PTB tree: {line.strip()[:60]!r}") from None
    return phrases


def binary_label(fine: int) -> int | None:
    """SST-2 from SST-5: 0-1 -> 0, 3-4 -> 1, neutral 2 -> dropped (None)."""
    return None if fine == 2 else int(fine > 2)


@dataclass
class SSTCorpus(HubCorpus):
    """SST-5 (``classes: 5``) or SST-2 (``classes: 2``); see the module docstring."""

    classes: int = 5
    train_phrases: bool = False

    def __post_init__(self):
        if self.classes not in (2, 5):
            raise DataError(f"data.classes={self.classes}: SST has 5 (fine-grained) or 2 (binary) classes")

    def load_local(self, path: Path) -> DatasetDict:
        from seqbench.data.text import read_text

        splits = {}
        for split, file in SST_FILES.items():
            phrases = self.train_phrases and split == "train"
            examples: dict[str, int] = {}  # text -> label, insertion-ordered; phrases repeat across trees
            texts, labels = [], []
            for n, line in enumerate(read_text(path / file).splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    nodes = parse_phrases(line) if phrases else [parse_tree(line)]
                except ValueError as e:
                    raise DataError(f"{path / file} line {n}: {e}") from None
                for text, fine in nodes:
                    label = fine if self.classes == 5 else binary_label(fine)
                    if label is None:
                        continue
                    if phrases:
                        examples.setdefault(text, label)
                    else:
                        texts.append(text)
                        labels.append(label)
            if phrases:
                texts, labels = list(examples), list(examples.values())
            splits[split] = labelled_dataset(texts, labels, self.label_names)
        return DatasetDict(splits)
