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

Selective copying (Gu & Dao 2023, "Mamba", section 4.1; copy memory with random spacing): the
``copy_length`` symbols sit at random distinct positions of a ``length``-step stretch of blanks,
then come the delimiter and ``copy_length`` blanks at which the symbols must be repeated in order of
appearance. Same columns, alphabet, targets and memoryless baseline as copy memory, with the
sequence length + 1 + copy_length steps long (delay = length + 1 - copy_length in the formula).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from seqbench.data.benchmark import LengthBenchmark
from seqbench.data.sources import GeneratedCorpus
from seqbench.errors import ConfigError

SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


def split_rng(kind: str, seed: int, split: str) -> np.random.Generator:
    """An independent generator per (generator kind, seed, split)."""
    return np.random.default_rng([sum(map(ord, kind)), int(seed), SPLIT_STREAMS[split]])


@dataclass
class AddingProblem(GeneratedCorpus):
    long_range = LengthBenchmark("adding problem", "data.length", "sequence length T", "test/mse", True,
                                 baseline_metric="test/baseline_mse")
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
    long_range = LengthBenchmark("copy memory", "data.delay", "delay (blanks between the symbols and the recall)",
                                 "test/recall_accuracy", False, baseline_metric="test/baseline_recall_accuracy")
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


@dataclass
class SelectiveCopy(GeneratedCorpus):
    """Selective copying: like :class:`CopyMemory`, but the symbols are scattered at random distinct
    positions of a ``length``-step stretch of blanks (the spacing varies from example to example, so
    what to keep must be chosen by content, not by time), followed by the delimiter and
    ``copy_length`` recall steps::

        inputs   _ c _ _ a _ _ _ c _ b _ : _ _ _ _        (length 12, copy_length 4, K >= 3)
        targets  _ _ _ _ _ _ _ _ _ _ _ _ _ c a c b
    """

    long_range = LengthBenchmark("selective copying", "data.length",
                                 "length of the stretch the symbols are scattered over", "test/recall_accuracy",
                                 False, baseline_metric="test/baseline_recall_accuracy")

    name: str = "selective_copy"
    task: str = "copy"    # served by CopyTask: same inputs {blank, 1..K, delimiter}, same targets
    num_symbols: int = 8
    copy_length: int = 10
    length: int = 100
    input_columns = ("inputs",)
    space_keys = ("num_symbols", "copy_length", "length")

    def check(self) -> None:
        if self.copy_length < 1 or self.length < self.copy_length or not 1 <= self.num_symbols <= 26:
            raise ConfigError(f"selective copy needs copy_length >= 1, length >= copy_length and "
                              f"1 <= num_symbols <= 26 (got {self.copy_length}, {self.length}, {self.num_symbols})")

    def generate(self, split: str, n: int) -> Dataset:
        rng = split_rng(self.name, self.seed, split)
        K, L, T = self.num_symbols, self.copy_length, self.length
        inputs = np.zeros((n, T + 1 + L), dtype=np.int64)
        targets = np.zeros_like(inputs)
        for row in range(n):  # one example at a time: a longer draw extends the same stream
            symbols = rng.integers(1, K + 1, L)
            inputs[row, np.sort(rng.choice(T, L, replace=False))] = symbols
            targets[row, -L:] = symbols
        inputs[:, T] = K + 1                    # delimiter: "now repeat"
        alphabet = "_" + "abcdefghijklmnopqrstuvwxyz"[:K] + ":"
        return Dataset.from_dict({"inputs": inputs.tolist(), "targets": targets.tolist(),
                                  "text": ["".join(alphabet[i] for i in row) for row in inputs.tolist()]})


@dataclass
class CountingBits(GeneratedCorpus):
    """Counting ones as regression (after Roelants 2015, "How to implement a recurrent neural network, part 1"): ``length`` bits
    x_t ~ Bernoulli(1/2); the target is their sum, y = sum_t x_t. Predicting the mean (y = T/2)
    gives MSE T/4, the baseline to beat. Columns: ``bits`` (T ints), ``target`` (float), ``text``
    (the bits as a 0/1 string: the example's identity, so held-out strings are unseen in train)."""

    name: str = "counting_bits"
    task: str = "count"
    length: int = 10
    space_keys = ("length",)

    def check(self) -> None:
        if self.length < 1:
            raise ConfigError(f"data.length={self.length} must be >= 1")

    def generate(self, split: str, n: int) -> Dataset:
        bits = split_rng(self.name, self.seed, split).integers(0, 2, (n, self.length))
        return Dataset.from_dict({"bits": bits.tolist(), "target": bits.sum(1).astype(np.float32).tolist(),
                                  "text": ["".join(map(str, b)) for b in bits.tolist()]})
