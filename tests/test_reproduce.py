"""The reproduction layer (seqbench.reproduce): recipes load and compose at every size, the table's
statistics and goal tests against hand-computed values, and one recipe end to end through the CLI
(runs tracked under the recipe's parent run, the row in reports/reproduce/report.md)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from seqbench.errors import ConfigError
from seqbench.reproduce import goal_met, goal_text, load_recipe, recipe_study, recipes, rows_for
from seqbench.study import expected_runs


def test_goals_against_hand_values():
    assert goal_met({"at_most": 1.47}, 1.46) and not goal_met({"at_most": 1.47}, 1.48)
    assert goal_met({"at_least": 83.0}, 83.0) and not goal_met({"at_least": 83.0}, 82.99)
    assert goal_met({"within": 0.1}, 8.1, 7.4) and goal_met({"within": 0.1}, 6.7, 7.4)
    assert not goal_met({"within": 0.1}, 8.2, 7.4) and not goal_met({"within": 0.1}, 6.6, 7.4)
    assert goal_text({"within": 0.1}, 7.4) == "7.4 ± 10%" and goal_text({"at_least": 83.0}) == "≥ 83"
    assert goal_text(None) == "–"


@pytest.mark.parametrize("name", recipes())
@pytest.mark.parametrize("size", ["cpu", "full"])
def test_every_shipped_recipe_composes_at_its_sizes(name, size, tmp_path):
    recipe = load_recipe(name)
    if size not in recipe["sizes"]:
        pytest.skip(f"{name} has no {size} size")
    study = recipe_study(recipe, size)
    expected = expected_runs(study, str(tmp_path))
    assert expected and all(e.cfg.seed in study["seeds"] for e in expected)
    assert study["name"] == f"reproduce-{name}" + ("" if size == "cpu" else f"-{size}")


RECIPE = {"name": "toy", "title": "toy", "seeds": [0, 1, 2],
          "anchor": {"citation": "someone 2020", "metric": "test/accuracy", "scale": 100, "published": 80.0,
                     "goal": {"at_least": 81.0}},
          "common": ["task=classify", "data=counting_ones", "tokenizer=char"],
          "grids": [{"name": "g", "overrides": ["model=rnn,gru", "data.num_train=100,200"],
                     "replicates": ["data.num_train"]}],
          "sizes": {"cpu": {}, "full": {"anchor": {"goal": {"at_least": 85.0}}}}}


def fake_runs(expected, value_of) -> pd.DataFrame:
    """FINISHED runs for the expected configurations (plus an older run of the first, ignored)."""
    rows = [{"run_id": f"r{i}", "status": "FINISHED", "tags.config_hash": e.hash, "tags.study": "x",
             "start_time": pd.Timestamp(2026, 1, 2), "metrics.test/accuracy": value_of(e),
             "metrics.wall_time_s": 60.0} for i, e in enumerate(expected)]
    rows.append({**rows[0], "run_id": "old", "start_time": pd.Timestamp(2025, 1, 1), "metrics.test/accuracy": 0.0})
    return pd.DataFrame(rows)


def test_rows_pool_seeds_and_replicates_and_compare_with_the_published_figure(tmp_path):
    expected = expected_runs(recipe_study(RECIPE, "cpu"), str(tmp_path))
    assert len(expected) == 2 * 2 * 3  # cells x replicates x seeds
    value = lambda e: (0.79 if e.cfg.model.name == "rnn" else 0.84) + 0.01 * e.cfg.seed + (e.cfg.data.num_train == 200) * 0.005
    rows = {r.label: r for r in rows_for(RECIPE, "cpu", expected, fake_runs(expected, value))}
    assert set(rows) == {"g: model=rnn", "g: model=gru"}  # the replicate key is pooled, not a row
    gru = rows["g: model=gru"]
    values = [100 * (0.84 + 0.01 * s + 0.005 * r) for s in range(3) for r in (0, 1)]
    assert gru.n == 6 and gru.expected == 6
    assert gru.mean == pytest.approx(np.mean(values)) and gru.sd == pytest.approx(np.std(values, ddof=1))
    half = stats.t.ppf(0.975, 5) * np.std(values, ddof=1) / math.sqrt(6)
    assert gru.ci == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert gru.delta == pytest.approx(np.mean(values) - 80.0) and gru.met is True
    rnn = rows["g: model=rnn"]  # mean 79 + 1 + 0.25 = 80.25: above the published 80, below the goal 81
    assert rnn.mean == pytest.approx(80.25) and rnn.delta == pytest.approx(0.25) and rnn.met is False


def test_goal_and_missing_runs(tmp_path):
    expected = expected_runs(recipe_study(RECIPE, "full"), str(tmp_path))
    runs = fake_runs(expected[:3], lambda e: 0.9)  # only 3 of 12 FINISHED
    rows = {r.label: r for r in rows_for(RECIPE, "full", expected, runs)}
    first = rows[next(iter(rows))]
    assert first.n == 3 and first.expected == 6 and first.anchor["goal"] == {"at_least": 85.0}
    empty = [r for r in rows.values() if r.n == 0][0]
    assert empty.met is None and math.isnan(empty.mean)


@pytest.mark.parametrize("broken, message", [
    ({"anchor": {"citation": "x", "metric": "test/accuracy", "goal": {"about": 1}}}, "goal="),
    ({"anchor": {"citation": "x", "metric": "test/accuracy", "goal": {"within": 0.1}}}, "needs a published"),
    ({"sizes": {"gpu": {}}}, "no 'cpu'"),
    ({"sizes": {"cpu": {}, "huge": {}}}, "valid choices"),
])
def test_a_broken_recipe_is_one_line(tmp_path, broken, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **broken}))
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe(str(path))
    assert "\n" not in str(e.value)


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ConfigError, match="valid choices: .*mr"):
        load_recipe("nonexistent")
