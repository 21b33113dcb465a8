"""Long-range dependency benchmarks, generated deterministically from the seed (the tasks that
train on them: :mod:`seqbench.tasks.longrange`).

Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): ``length`` steps of two inputs,
a value u_t ~ U[0, 1] and a marker m_t in {0, 1} with exactly two ones, one in each half of the
sequence; the target is the sum of the two marked values, y = sum_t m_t u_t. Predicting the mean
(y = 1) gives MSE ~ 1/6, the baseline to beat. Columns: ``values`` (T floats), ``markers``
(T ints), ``target`` (float), ``text`` (the markers as a 0/1 string, for inspection).

Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): ``copy_length`` symbols drawn
from 1..num_symbols, then ``delay`` blanks (0) with a delimiter (num_symbols + 1) at the last of
them, then ``copy_length`` more blanks; the target is blanks everywhere except the last
``copy_length`` steps, which must repeat the symbols. The dependency distance is
delay + copy_length; the memoryless strategy (blanks, then uniformly random symbols) gives
cross-entropy copy_length * ln(num_symbols) / (delay + 2 * copy_length), the baseline to beat. Columns: ``inputs``, ``targets`` (ints),
``text`` (inputs rendered: symbols as letters a.., blanks as ``_``, the delimiter as ``:``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from seqbench.data.sources import GeneratedCorpus
from seqbench.errors import ConfigError

SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


def split_rng(kind: str, seed: int, split: str) -> np.random.Generator:
    """An independent generator per (generator kind, seed, split)."""
    return np.random.default_rng([sum(map(ord, kind)), int(seed), SPLIT_STREAMS[split]])


@dataclass
class AddingProblem(GeneratedCorpus):
    name: str = "adding"
    task: str = "adding"    # seed, num_train/val/test: GeneratedCorpus (10,000 / 1,000 / 1,000)
    length: int = 100
    input_columns = ("values", "markers")   # an example is its inputs (the marker string alone repeats)
    space_keys = ("length",)

    def check(self) -> None:
        if self.length < 2:
            raise ConfigError(f"data.length={self.length} must be >= 2 (one marker per half)")

    def generate(self, split: str, n: int) -> Dataset:
        rng = split_rng(self.name, self.seed, split)
        T, half = self.length, self.length // 2
        values = rng.random((n, T), dtype=np.float32)
        markers = np.zeros((n, T), dtype=np.int64)
        rows = np.arange(n)
        markers[rows, rng.integers(0, half, n)] = 1
        markers[rows, rng.integers(half, T, n)] = 1
        target = (values * markers).sum(1)
        return Dataset.from_dict({"values": values.tolist(), "markers": markers.tolist(),
                                  "target": target.tolist(),
                                  "text": ["".join(map(str, m)) for m in markers.tolist()]})


@dataclass
class CopyMemory(GeneratedCorpus):
    name: str = "copy"
    task: str = "copy"    # seed, num_train/val/test: GeneratedCorpus (10,000 / 1,000 / 1,000)
    num_symbols: int = 8
    copy_length: int = 10
    delay: int = 100
    input_columns = ("inputs",)
    space_keys = ("num_symbols", "copy_length")

    def check(self) -> None:
        if self.copy_length < 1 or self.delay < 1 or not 1 <= self.num_symbols <= 26:
            raise ConfigError(f"copy memory needs copy_length >= 1, delay >= 1 and 1 <= num_symbols <= 26 "
                              f"(got {self.copy_length}, {self.delay}, {self.num_symbols})")

    def generate(self, split: str, n: int) -> Dataset:
        rng = split_rng(self.name, self.seed, split)
        K, L, D = self.num_symbols, self.copy_length, self.delay
        symbols = rng.integers(1, K + 1, (n, L))
        inputs = np.zeros((n, L + D + L), dtype=np.int64)
        inputs[:, :L] = symbols
        inputs[:, L + D - 1] = K + 1            # delimiter: "now repeat"
        targets = np.zeros_like(inputs)
        targets[:, -L:] = symbols
        alphabet = "_" + "abcdefghijklmnopqrstuvwxyz"[:K] + ":"
        return Dataset.from_dict({"inputs": inputs.tolist(), "targets": targets.tolist(),
                                  "text": ["".join(alphabet[i] for i in row) for row in inputs.tolist()]})
