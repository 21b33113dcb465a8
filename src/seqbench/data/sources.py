"""Where corpora come from: local files first, the Hugging Face hub second, one clear error last.

Every ``conf/data/<name>.yaml`` names a :class:`Corpus` subclass; calling it returns a
``datasets.DatasetDict`` with exactly the splits ``train``/``validation``/``test``, a ``text``
column and, for classification, an integer ``label`` column typed ``ClassLabel`` (so the number
of classes travels with the data). ``task`` says which task the corpus serves (``lm``,
``classify``, ...); :func:`seqbench.validate.validate` refuses other pairings before any run.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from seqbench.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
#: split names used by hub datasets or classic distributions -> ours
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation", "validate": "validation"}
DATA_VARIABLE = "SEQBENCH_DATA_DIR"


@dataclass
class Corpus:
    """Base of every data target: ``Corpus(...)()`` -> checked DatasetDict. Subclasses implement
    :meth:`load`."""

    name: str = "corpus"
    task: str = "lm"

    def load(self) -> DatasetDict:
        raise NotImplementedError

    def __call__(self) -> DatasetDict:
        """The checked corpus, loaded once per process for the same settings: the jobs of a
        multirun share a process, and each of its 8 x 3 jobs would otherwise parse SST-2's trees
        (~0.5 s) or draw a leak-free synthetic corpus (~0.2 s) again. The splits are immutable
        Arrow datasets; each caller gets its own dict of them."""
        key = (type(self), repr(sorted(vars(self).items())), os.environ.get(DATA_VARIABLE))
        if (corpus := _loaded.get(key)) is None:
            corpus = _loaded[key] = check_corpus(self.load(), self.name, labelled=self.task == "classify")
        return DatasetDict(corpus)


#: (corpus class, its settings, SEQBENCH_DATA_DIR) -> the corpus it loaded in this process
_loaded: dict[tuple, DatasetDict] = {}


@dataclass
class GeneratedCorpus(Corpus):
    """A corpus the project generates: offline and deterministic from ``seed``. Each split is drawn
    from its own seeded stream, and the held-out splits are leak-free: the training split is drawn
    first, then validation and test keep only examples whose input (:attr:`input_columns`) occurs
    neither in train nor in the other held-out split (test also avoids validation). Subclasses
    implement :meth:`generate` (and :meth:`check`); ``generate(split, n)`` must be deterministic,
    so drawing more to replace rejected examples is drawing a longer stream of the same seed."""

    seed: int = 0
    num_train: int = 10000
    num_val: int = 1000
    num_test: int = 1000
    #: the columns that make an example's input (its identity for leak checks)
    input_columns: ClassVar[tuple[str, ...]] = ("text",)
    #: data keys that set how many distinct examples exist (named when a split cannot be filled)
    space_keys: ClassVar[tuple[str, ...]] = ()
    #: at most this many times a held-out split's size is drawn to fill it with unseen examples
    max_draw_factor: ClassVar[int] = 64

    def check(self) -> None:
        """Raise ConfigError for parameters that cannot generate anything (before generating)."""

    def generate(self, split: str, n: int) -> Dataset:
        raise NotImplementedError

    def example_keys(self, ds: Dataset) -> list:
        """One hashable identity per example: its :attr:`input_columns` values."""
        def frozen(v):
            return tuple(frozen(x) for x in v) if isinstance(v, list) else v

        columns = [ds[c] for c in self.input_columns]
        return [tuple(frozen(v) for v in row) for row in zip(*columns)]

    def draw_unseen(self, split: str, n: int, seen: set) -> Dataset:
        """``n`` examples of ``split`` whose keys are not in ``seen``: the first ``n`` such of the
        split's stream (drawn n, 2n, 4n, ... long), deterministic from the seed; ConfigError
        when ``max_draw_factor * n`` draws do not hold enough."""
        size = max(n, 1)
        while True:
            ds = self.generate(split, size)
            keep = [i for i, key in enumerate(self.example_keys(ds)) if key not in seen][:n]
            if len(keep) == n:
                return ds if len(keep) == len(ds) else ds.select(keep)
            if size >= self.max_draw_factor * max(n, 1):
                break
            size *= 2
        key = {"validation": "num_val", "test": "num_test"}[split]
        space = ", ".join(f"data.{k}={'null' if getattr(self, k) is None else getattr(self, k)}"
                          for k in self.space_keys)
        raise ConfigError(f"data={self.name}: only {len(keep)} of data.{key}={n} {split} examples are unseen in "
                          f"train (data.num_train={self.num_train}){' and validation' if split == 'test' else ''} "
                          f"after {size} draws; too few distinct examples exist"
                          f"{f' at {space}' if space else ''}: enlarge that or lower data.num_train/data.{key}")

    def load(self) -> DatasetDict:
        self.check()
        train = self.generate("train", self.num_train)
        seen = set(self.example_keys(train))
        validation = self.draw_unseen("validation", self.num_val, seen)
        test = self.draw_unseen("test", self.num_test, seen | set(self.example_keys(validation)))
        return DatasetDict({"train": train, "validation": validation, "test": test})


def check_corpus(corpus: DatasetDict, name: str, labelled: bool = False) -> DatasetDict:
    """Exactly train/validation/test, each non-empty, with text (and label); else a DataError."""
    missing = [s for s in SPLITS if s not in corpus]
    if missing:
        raise DataError(f"corpus {name} has no {', '.join(missing)} split (it has: {', '.join(corpus)})")
    corpus = DatasetDict({s: corpus[s] for s in SPLITS})
    for split, ds in corpus.items():
        if "text" not in ds.column_names:
            raise DataError(f"corpus {name}: split {split!r} has no 'text' column (columns: "
                            f"{', '.join(ds.column_names)})")
        if len(ds) == 0 or not any(t.strip() for t in ds["text"]):
            raise DataError(f"corpus {name}: the {split} split is empty")
        if labelled and "label" not in ds.column_names:
            raise DataError(f"corpus {name}: split {split!r} has no 'label' column for classification")
    return corpus


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached, checked cheaply (offline mode, or its host does not
    resolve and no proxy is set), instead of waiting through the hub client's retries."""
    from datasets import config
    from huggingface_hub import constants

    if config.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:
        return f"cannot resolve {host}: {e.strerror or e}"
    return None


def load_hub(name: str, hub_id: str, hub_config: str | None, tried: str | None) -> DatasetDict:
    """``datasets.load_dataset(hub_id, hub_config)``, or one DataError naming the local path that
    was tried and the variable to set."""
    reason = hub_unreachable()
    if reason is None:
        from datasets import load_dataset

        try:
            return load_dataset(hub_id, hub_config)
        except Exception as e:  # the hub client raises many kinds; the user needs one line
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    where = f"no local copy at {tried}" if tried else "no local path configured"
    config = f" (config {hub_config!r})" if hub_config else ""
    raise DataError(f"data={name}: {where}, and the HF hub dataset {hub_id!r}{config} could not be "
                    f"loaded ({reason}); set {DATA_VARIABLE} to the folder holding {name}'s files "
                    f"(e.g. {DATA_VARIABLE}=../shared/data) or data.path=/abs/path, or run online")


def normalise_splits(corpus: DatasetDict) -> DatasetDict:
    """Rename split aliases (dev, valid, ...) to ours; drop others (e.g. IMDb's 'unsupervised')."""
    out = {}
    for split, ds in corpus.items():
        ours = SPLIT_ALIASES.get(split, split)
        if ours in SPLITS:
            out[ours] = ds
    return DatasetDict(out)


def carve_validation(corpus: DatasetDict, fraction: float, seed: int) -> DatasetDict:
    """A source without a validation split: a seeded random ``fraction`` of train validates."""
    if "validation" in corpus:
        return corpus
    parts = corpus["train"].train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return DatasetDict({"train": parts["train"], "validation": parts["test"], "test": corpus["test"]})


def with_labels(ds: Dataset, names: list[str]) -> Dataset:
    """Type ``label`` as ClassLabel(names): the number of classes travels with the data."""
    feature = ds.features["label"]
    if isinstance(feature, ClassLabel) and feature.names == list(names):
        return ds
    return ds.cast_column("label", ClassLabel(names=list(names)))


def labelled_dataset(texts: list[str], labels: list[int], names: list[str]) -> Dataset:
    """A ``text`` + ``label`` split, labels typed ClassLabel(names)."""
    return Dataset.from_dict({"text": texts, "label": labels},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=list(names))}))


@dataclass
class HubCorpus(Corpus):
    """A corpus with a local copy under ``path`` (read first when it exists) and a hub id.

    Local ``path`` is either a folder with one text file per split (``files``: split -> file
    name, e.g. WikiText's ``wiki.train.raw``) or a snapshot of the hub repository (its data files,
    loaded with ``datasets.load_dataset(path)``). Hub columns ``text_column``/``label_column`` are
    renamed to ``text``/``label``; a source without validation split gets a seeded
    ``val_fraction`` of train (IMDb).
    """

    path: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    files: dict | None = None
    text_column: str = "text"
    label_column: str | None = None
    label_names: list | None = None
    val_fraction: float = 0.1
    split_seed: int = 0

    def load(self) -> DatasetDict:
        local = Path(self.path) if self.path else None
        if local is not None and local.exists():
            corpus = self.load_local(local)
        elif self.hub_id:
            corpus = load_hub(self.name, self.hub_id, self.hub_config, self.path)
        else:
            raise DataError(f"data={self.name}: corpus not found at {self.path} (set {DATA_VARIABLE} "
                            f"to the folder holding it, e.g. {DATA_VARIABLE}=../shared/data, or "
                            f"data.path=/abs/path)")
        return self.standardise(normalise_splits(corpus))

    def load_local(self, path: Path) -> DatasetDict:
        from seqbench.data.text import read_text

        if self.files:
            return DatasetDict({s: Dataset.from_dict({self.text_column: [read_text(path / f)]})
                                for s, f in self.files.items()})
        if not path.is_dir():
            raise DataError(f"data={self.name}: data.path={path} must be a folder holding a snapshot of "
                            f"the hub repository {self.hub_id}")
        from datasets import load_dataset

        try:
            return load_dataset(str(path), self.hub_config)
        except Exception as e:
            raise DataError(f"data={self.name}: cannot read the local copy at {path}: "
                            f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None

    def standardise(self, corpus: DatasetDict) -> DatasetDict:
        corpus = carve_validation(corpus, self.val_fraction, self.split_seed)
        out = {}
        for split, ds in corpus.items():
            keep = {self.text_column: "text"}
            if self.label_column:
                keep[self.label_column] = "label"
            missing = [c for c in keep if c not in ds.column_names]
            if missing:
                raise DataError(f"data={self.name}: split {split!r} has no column {missing[0]!r} "
                                f"(columns: {', '.join(ds.column_names)}); set data.text_column/"
                                f"data.label_column")
            ds = ds.select_columns(list(keep)).rename_columns({k: v for k, v in keep.items() if k != v})
            if self.label_column and self.label_names:
                ds = with_labels(ds, self.label_names)
            out[split] = ds
        return DatasetDict(out)
