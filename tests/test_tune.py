"""Optuna HPO over seqbench runs: resumable from its RDB store; a failing trial does not stop it."""

from __future__ import annotations

import optuna
from mlflow import MlflowClient

from conftest import TINY
from seqbench.tune import main, study_name


def trials_of(root, name: str):
    """The trial runs of one optuna study: nested under its parent run in experiment seqbench/<name>."""
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name(f"seqbench/{name}")
    all_runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in all_runs if r.data.tags.get("task") == "study"]
    trials = [r for r in all_runs if r is not parent]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    return client, parent, trials


def test_tune_is_resumable_and_tracks_every_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    overrides = [*TINY, "trainer.max_epochs=1", "model=gru"]
    assert main(["--trials", "2", *overrides]) == 0
    assert main(["--trials", "3", *overrides]) == 0  # continues: one more trial, not three
    study = optuna.load_study(study_name=study_name(overrides), storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client, parent, runs = trials_of(tmp_path, study_name(overrides))
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val/best_loss"] == study.best_value
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    for r, t in ((r, t) for r in runs for t in study.trials if t.user_attrs["mlflow_run_id"] == r.info.run_id):
        assert float(r.data.params["optimizer.lr"]) == t.params["optimizer.lr"]
        assert int(r.data.params["model.hidden_size"]) == t.params["model.hidden_size"]
        assert r.data.metrics["val/best_loss"] == t.value
        assert r.data.tags["study"] == study_name(overrides)


def test_failing_trials_are_recorded_and_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    overrides = [*TINY, "trainer.max_epochs=1", "optimizer=sgd", "trainer.gradient_clip_val=null",
                 "max_loss=0.5"]  # every trial "diverges" at its first step
    assert main(["--trials", "2", *overrides]) == 1  # no complete trial
    study = optuna.load_study(study_name=study_name(overrides), storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    client, parent, runs = trials_of(tmp_path, study_name(overrides))
    assert parent.info.status == "FAILED"  # no complete trial
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    assert all("training diverged" in r.data.tags["failure_reason"] for r in runs)


def test_unknown_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    assert main(["model=quantum"]) == 2
    assert capsys.readouterr().err.startswith("seqbench.tune: error: unknown model 'quantum'; valid choices:")


def test_each_cell_gets_its_own_study_and_a_best_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    common = [*TINY, "trainer.max_epochs=1"]
    assert main(["--trials", "1", *common, "model=rnn,gru"]) == 0
    out = capsys.readouterr().out
    runs = [r for model in ("rnn", "gru") for r in trials_of(tmp_path, study_name([*common, f"model={model}"]))[2]]
    assert sorted(r.data.tags["model"] for r in runs) == ["gru", "rnn"]
    for model in ("rnn", "gru"):
        name = study_name([*common, f"model={model}"])
        (trial,) = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
        (row,) = [line for line in out.splitlines() if line.startswith(f"| {model} |")]
        assert f"| {trial.value:.4f} |" in row and trial.user_attrs["mlflow_run_id"] in row
        assert {r.data.tags["study"] for r in runs if r.data.tags["model"] == model} == {name}
