"""data=selective_copy (Gu & Dao 2023): the generated examples are what the task says, deterministic
and leak-free, the memoryless baseline is copy memory's formula, and task=copy trains on it end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_cfg
from seqbench.data.longrange import copy_baseline
from seqbench.data.synthetic_longrange import SelectiveCopy
from seqbench.errors import ConfigError
from seqbench.run import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_examples_hold_the_symbols_at_distinct_positions_and_targets_repeat_them_in_order():
    K, L, T = 5, 4, 20
    data = SelectiveCopy(seed=3, num_train=200, num_val=50, num_test=50, num_symbols=K, copy_length=L, length=T)()
    for split in ("train", "validation", "test"):
        inputs = np.asarray(data[split]["inputs"])
        targets = np.asarray(data[split]["targets"])
        assert inputs.shape == targets.shape == (len(data[split]), T + 1 + L)
        assert (inputs[:, T] == K + 1).all() and (inputs[:, T + 1:] == 0).all()       # delimiter, then blanks
        assert (targets[:, :T + 1] == 0).all()
        for x, y in zip(inputs, targets):
            positions = np.flatnonzero(x[:T])
            assert len(positions) == L                                                  # exactly L, distinct
            assert ((x[positions] >= 1) & (x[positions] <= K)).all()
            assert (y[-L:] == x[positions]).all()                                       # in order of appearance
    text = data["train"][0]["text"]
    assert len(text) == T + 1 + L and text[T] == ":" and set(text) <= set("_abcde:")
    # the spacing varies: the positions are not the same in every example
    first = {tuple(np.flatnonzero(np.asarray(x[:T]))) for x in data["train"]["inputs"]}
    assert len(first) > 100


def test_generation_is_deterministic_from_the_seed_and_held_out_examples_are_unseen():
    make = lambda seed, **kw: SelectiveCopy(seed=seed, **{"num_train": 300, "num_val": 60, "num_test": 60,
                                                          "num_symbols": 5, "copy_length": 3, "length": 20, **kw})()
    a, b, c = make(0), make(0), make(1)
    assert a["test"]["inputs"] == b["test"]["inputs"] and a["train"]["inputs"] != c["train"]["inputs"]
    # 6 position pairs x 9 symbol pairs = 54 distinct inputs: training draws repeat some of them, and
    # the held-out splits must still avoid train (and test avoid validation)
    small = make(0, num_train=20, num_val=10, num_test=10, num_symbols=3, copy_length=2, length=4)
    keys = {s: {tuple(x) for x in small[s]["inputs"]} for s in ("train", "validation", "test")}
    assert len(small["validation"]) == len(small["test"]) == 10
    assert not keys["validation"] & keys["train"]
    assert not keys["test"] & (keys["train"] | keys["validation"])
    with pytest.raises(ConfigError, match="too few distinct examples exist at data.num_symbols=3, "
                                          "data.copy_length=2, data.length=4"):
        make(0, num_train=300, num_val=10, num_test=10, num_symbols=3, copy_length=2, length=4)


def test_memoryless_baseline_is_the_copy_formula():
    """The best position-only predictor (per-position target frequencies of train) scores on test
    copy_length * ln K / (sequence length): copy memory's formula with delay = length + 1 - copy_length."""
    K, L, T = 6, 5, 30
    data = SelectiveCopy(seed=0, num_train=4000, num_val=10, num_test=2000, num_symbols=K, copy_length=L,
                         length=T)()
    train, test = torch.tensor(data["train"]["targets"]), torch.tensor(data["test"]["targets"])
    counts = F.one_hot(train, K + 1).sum(0).double()                   # (T + 1 + L, K + 1)
    ce = -torch.log(counts / counts.sum(1, keepdim=True)).gather(1, test.T).mean()
    assert float(ce) == pytest.approx(copy_baseline(K, L, T + 1 - L), rel=0.01)
    assert copy_baseline(K, L, T + 1 - L) == pytest.approx(L * math.log(K) / (T + 1 + L))


def test_a_tiny_lstm_runs_selective_copy_end_to_end(tmp_path):
    cfg = compose_cfg(["task=copy", "data=selective_copy", "data.length=12", "data.copy_length=3",
                       "data.num_symbols=4", "data.num_train=256", "data.num_val=64", "data.num_test=64",
                       "model=lstm", "model.hidden_size=16", "trainer.max_epochs=1", "task.probe=false",
                       "trainer.enable_progress_bar=false", "logger=none", "num_threads=1"], root=tmp_path)
    result = run(cfg)
    assert math.isfinite(result["test/recall_accuracy"]) and 0 <= result["test/recall_accuracy"] <= 1
    assert math.isfinite(result["test/loss"])
    assert result["test/baseline_loss"] == pytest.approx(3 * math.log(4) / (12 + 1 + 3))
    assert result["test/baseline_recall_accuracy"] == pytest.approx(1 / 4)
    assert result["primary"] == result["test/recall_accuracy"]


@pytest.mark.parametrize("overrides,message", [
    (["task=copy", "data.length=3", "data.copy_length=5"],
     "selective copy needs copy_length >= 1, length >= copy_length and 1 <= num_symbols <= 26 (got 5, 3, 8)"),
    (["task=lm"], "data=selective_copy is a dataset for task=copy, not task=lm"),
])
def test_bad_selective_copy_config_is_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        run(compose_cfg(["data=selective_copy", *overrides, "logger=none", "trainer.enable_progress_bar=false"],
                        root=tmp_path))
    assert message in str(e.value) and "\n" not in str(e.value)
