"""Movie Review sentence polarity (MR, Pang & Lee 2005), evaluated by 10-fold cross-validation.

MR has no official split; Kim (2014) reports 10-fold CV. One run evaluates one fold: the 10,662
sentences (local ``rt-polarity.pos``/``.neg``, label 1/0; or the hub's rotten_tomatoes splits
concatenated) are shuffled with a fixed seed (``shuffle_seed``) and cut into ``num_folds``
contiguous folds (the first ``n % num_folds`` one longer). Fold ``data.fold`` is the test split;
of the remaining folds (in shuffled order) the first ``val_fraction`` validates, the rest trains.
Sweeping ``data.fold=0,...,9`` and averaging gives the CV estimate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from datasets import DatasetDict

from seqbench.data.sources import HubCorpus, labelled_dataset, load_hub, normalise_splits
from seqbench.errors import ConfigError


def fold_bounds(n: int, num_folds: int, fold: int) -> tuple[int, int]:
    """[start, end) of fold ``fold`` when n items are cut into num_folds near-equal chunks."""
    size, extra = divmod(n, num_folds)
    start = fold * size + min(fold, extra)
    return start, start + size + (fold < extra)


@dataclass
class MRCorpus(HubCorpus):
    fold: int = 0
    num_folds: int = 10
    shuffle_seed: int = 0

    def __post_init__(self):
        if not 0 <= int(self.fold) < int(self.num_folds):
            raise ConfigError(f"data.fold={self.fold} must be in [0, {self.num_folds - 1}] "
                              f"(data.num_folds={self.num_folds})")

    def sentences(self) -> tuple[list[str], list[int]]:
        path = Path(self.path) if self.path else None
        if path is not None and path.exists():
            from seqbench.data.text import read_text

            pos = [s.strip() for s in read_text(path / "rt-polarity.pos").splitlines() if s.strip()]
            neg = [s.strip() for s in read_text(path / "rt-polarity.neg").splitlines() if s.strip()]
            return pos + neg, [1] * len(pos) + [0] * len(neg)
        hub = normalise_splits(load_hub(self.name, self.hub_id, self.hub_config, self.path))
        texts, labels = [], []
        for split in ("train", "validation", "test"):
            if split in hub:
                texts += hub[split][self.text_column]
                labels += hub[split][self.label_column or "label"]
        return texts, labels

    def load(self) -> DatasetDict:
        texts, labels = self.sentences()
        order = list(range(len(texts)))
        random.Random(self.shuffle_seed).shuffle(order)
        start, end = fold_bounds(len(order), self.num_folds, self.fold)
        test, rest = order[start:end], order[:start] + order[end:]
        n_val = round(len(rest) * self.val_fraction)
        parts = {"train": rest[n_val:], "validation": rest[:n_val], "test": test}
        return DatasetDict({split: labelled_dataset([texts[i] for i in idx], [labels[i] for i in idx],
                                                    self.label_names)
                            for split, idx in parts.items()})
