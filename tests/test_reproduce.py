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
    if size == "full":  # the full grids are large: compose each grid's first point and seed
        study = {**study, "seeds": study["seeds"][:1],
                 "grids": [{**g, "overrides": [o.split(",")[0] for o in g["overrides"]]} for g in study["grids"]]}
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


TINY_BUDGET = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
               "trainer.limit_test_batches=2", "logger=none", "num_threads=1", "task.eval_batch_size=16"]


@pytest.mark.parametrize("name", recipes("cpu"))
def test_every_recipe_trains_its_first_configuration_on_a_tiny_budget(name, tmp_path):
    """Each shipped recipe's first configuration, as the sweep composes it, trains and tests
    through seqbench.run on 2 batches (the real code path, a tiny budget)."""
    from seqbench.run import run

    study = recipe_study(load_recipe(name), "cpu")
    first = expected_runs(study, str(tmp_path), TINY_BUDGET)[0]
    if first.cfg.data.name == "imdb":
        pytest.skip("online only (the hub); its code path is tested on a local stand-in")
    metrics = run(first.cfg)
    anchor = {**load_recipe(name)["anchor"], **(first.grid.get("anchor") or {})}
    assert anchor["metric"] in metrics or anchor["metric"].startswith(("param/", "grad/")), anchor["metric"]


def test_reproduce_cli_end_to_end_tracks_runs_and_writes_the_row(tmp_path):
    """A toy recipe through ``python -m seqbench.reproduce``: runs nested under the recipe's
    parent run, the report row (published, mean ± sd, Δ, goal), the parent's reproduce/* metrics."""
    from mlflow.tracking import MlflowClient

    recipe = {"name": "toy", "title": "toy counting", "seeds": [0, 1], "jobs": 1,
              "anchor": {"citation": "the closed form", "metric": "param/weight_hh_l0", "published": 1.0,
                         "goal": {"within": 0.05}},
              "common": ["task=count", "task.readout=state", "data=counting_bits", "model=linear", "model.init_input=1.2",
                         "model.init_recurrent=1.2", "optimizer=rprop", "trainer.max_epochs=80", "+trainer.check_val_every_n_epoch=40",
                         "trainer.gradient_clip_val=null", "trainer.enable_progress_bar=false", "max_loss=1e12"],
              "grids": [{"name": "10 bits", "overrides": ["data.length=10"]}],
              "sizes": {"cpu": {"budget": "seconds"}}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "seqbench.reproduce", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "reports" / "reproduce" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| toy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "10 bits" and cells[3] == "1" and cells[6] == "1 ± 5%" and cells[7] == "yes"
    assert cells[4].endswith("(n=2)")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seqbench/reproduce-toy")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("task") == "study"][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    finals = [r.data.metrics["param/weight_hh_l0"] for r in children]
    assert parent.data.metrics["reproduce/10_bits/mean"] == pytest.approx(np.mean(finals))
    assert parent.data.metrics["reproduce/10_bits/goal_met"] == 1.0
    assert any(a.path == "loss_surface.png" for a in client.list_artifacts(children[0].info.run_id))
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "reproduce")} >= \
        {"reproduce/report.md", "reproduce/report.html"}


def test_imdb_recipe_runs_on_a_local_stand_in_and_fails_offline_in_one_line(tmp_path):
    """IMDb is online only: its recipe trains on a local snapshot-shaped stand-in (csv splits),
    and without one (offline) the CLI stops with one error line and creates no MLflow store."""
    from seqbench.run import run

    stand_in = tmp_path / "imdb"
    stand_in.mkdir()
    for split, n in (("train", 60), ("test", 20)):
        rows = ["text,label"] + [f'"{"a great film , loved it" if i % 2 else "a dull film , hated it"} {i}",{i % 2}'
                                 for i in range(n)]
        (stand_in / f"{split}.csv").write_text("\n".join(rows) + "\n")
    study = recipe_study(load_recipe("imdb"), "cpu")
    for e in expected_runs(study, str(tmp_path), [*TINY_BUDGET, f"data.path={stand_in}"])[::3]:  # boe, lstm
        metrics = run(e.cfg)
        assert 0 <= metrics["test/accuracy"] <= 1
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "SEQBENCH_DATA_DIR": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "seqbench.reproduce", "imdb"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "data=imdb" in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
