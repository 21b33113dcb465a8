"""Long-range tasks: the generators' stated baselines (numerically), an LSTM solving the adding
problem, task=adding/copy end to end into MLflow with the gradient probe, agreement by distance,
and impossible combinations refused before any run exists."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from conftest import compose_cfg
from seqbench.data.longrange import ADDING_BASELINE_MSE, copy_baseline
from seqbench.data.synthetic import VERBS, sentence
from seqbench.data.synthetic_longrange import AddingProblem, CopyMemory
from seqbench.errors import ConfigError
from seqbench.metrics.agreement import agreement_items, parse
from seqbench.run import run

#: a small adding run: real code paths, a few seconds on 2 cores
TINY_ADDING = ["task=adding", "data=adding", "data.length=20", "data.num_train=640", "data.num_val=100",
               "data.num_test=100", "model.hidden_size=16", "trainer.max_epochs=1",
               "trainer.enable_progress_bar=false"]


def runs_in(root):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


# -- the generators' baselines ---------------------------------------------------------------------
def test_trivial_predictor_mse_on_the_adding_problem_is_one_sixth():
    """y = u1 + u2 with u ~ U[0, 1]: predicting 1 costs Var(y) = 1/6 (sd of the estimate ~0.0014)."""
    data = AddingProblem(seed=0, num_train=20000, num_val=10, num_test=10, length=10)()
    y = np.asarray(data["train"]["target"])
    assert np.mean((y - 1.0) ** 2) == pytest.approx(ADDING_BASELINE_MSE, abs=0.006)
    assert y.mean() == pytest.approx(1.0, abs=0.01)   # y = 1 is the best constant


@pytest.mark.parametrize("delay", [5, 30])
def test_copy_baseline_is_the_memoryless_cross_entropy(delay):
    """The best predictor that sees only the position (the per-position target frequencies of the
    training split) scores, on the test split, copy_length * ln K / (delay + 2 * copy_length)."""
    K, L = 8, 10
    data = CopyMemory(seed=0, num_train=4000, num_val=10, num_test=2000, num_symbols=K, copy_length=L,
                      delay=delay)()
    train = torch.tensor(data["train"]["targets"])                     # (N, T)
    test = torch.tensor(data["test"]["targets"])
    counts = F.one_hot(train, K + 1).sum(0).double()                   # (T, K+1)
    logp = torch.log(counts / counts.sum(1, keepdim=True))              # position-only model
    ce = -logp.gather(1, test.T).mean()                                 # mean over steps and examples
    assert float(ce) == pytest.approx(copy_baseline(K, L, delay), rel=0.01)
    assert copy_baseline(8, 10, delay) == pytest.approx(10 * math.log(8) / (delay + 20))


# -- tasks ---------------------------------------------------------------------------------------------
def test_an_lstm_solves_the_adding_problem_at_small_length(tmp_path):
    """T = 20, 500 Adam steps (one epoch of 16,000 sequences in batches of 32): MSE far below 1/6."""
    cfg = compose_cfg(["task=adding", "data=adding", "data.length=20", "data.num_train=16000", "data.num_val=200",
                       "data.num_test=500", "model=lstm", "model.hidden_size=32", "optimizer.lr=0.01",
                       "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=none",
                       "task.probe=false"], root=tmp_path)
    result = run(cfg)
    assert result["test/mse"] < 0.05, result
    assert result["test/baseline_mse"] == pytest.approx(1 / 6, abs=0.03)


def test_adding_end_to_end_logs_mse_baseline_and_gradient_flow(tmp_path):
    cfg = compose_cfg([*TINY_ADDING, "model=lstm", "trainer.gradient_clip_val=0.05", "trainer.log_every_n_steps=1"],
                      root=tmp_path)
    result = run(cfg)
    client, runs = runs_in(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    r = runs[0]
    assert r.info.run_name == "adding/adding/char/lstm/s0" and r.data.tags["task"] == "adding"
    for key in ("test/mse", "test/baseline_mse", "test/mse_ratio", "val/mse", "grad/h_norm", "grad/c_norm",
                "grad/h_norm_init", "grad/norm", "grad/clipped_norm"):
        assert key in r.data.metrics and math.isfinite(r.data.metrics[key]), key
    assert result["test/mse"] == pytest.approx(r.data.metrics["test/mse"])
    history = lambda key: sorted(client.get_metric_history(r.info.run_id, key), key=lambda m: m.step)
    assert [m.step for m in history("grad/h_norm")] == list(range(20))          # step = lag
    assert [m.step for m in history("grad/h_norm_init")] == list(range(20))
    assert [m.step for m in history("grad/c_norm")] == list(range(1, 20))
    # the probe reports the pre-clip norm; the update's gradient is clipped to the value
    pre, post = history("grad/norm"), history("grad/clipped_norm")
    assert max(m.value for m in post) <= 0.05 + 1e-6 < max(m.value for m in pre)
    artifacts = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"gradient_flow.png", "gradient_flow.json", "config.yaml"} <= artifacts and "samples.txt" not in artifacts


def test_copy_runs_with_its_baseline(tmp_path):
    cfg = compose_cfg(["task=copy", "data=copy", "data.delay=6", "data.copy_length=4", "data.num_symbols=5",
                       "data.num_train=320", "data.num_val=64", "data.num_test=64", "model=gru",
                       "model.hidden_size=16", "embedding=onehot", "trainer.max_epochs=1",
                       "trainer.enable_progress_bar=false", "logger=none"], root=tmp_path)
    result = run(cfg)
    assert result["test/baseline_loss"] == pytest.approx(4 * math.log(5) / (6 + 8))
    assert result["test/baseline_recall_accuracy"] == pytest.approx(1 / 5)
    assert 0 <= result["test/recall_accuracy"] <= 1 and math.isfinite(result["test/loss"])


# -- agreement by distance --------------------------------------------------------------------------------
def test_agreement_items_find_the_main_verb_and_its_distance():
    it = parse("the dogs that the cat sees near the king know the bird .")
    assert (it.prefix, it.right, it.wrong, it.distance) == ("the dogs that the cat sees near the king ", "know",
                                                            "knows", 2)
    assert parse("the dog sees happy .").distance == 0
    assert parse("the dog see happy .") is None and agreement_items(["the dog sees happy .", "garbage"]) is None
    rng = random.Random(0)
    texts = [sentence(rng, 4) for _ in range(300)]
    items = agreement_items(texts)
    assert {it.distance for it in items} == {0, 1, 2, 3, 4}
    for it in items:
        number = "sg" if it.right in VERBS["sg"] else "pl"
        assert it.wrong in VERBS["pl" if number == "sg" else "sg"]


def test_lm_on_the_agreement_grammar_logs_accuracy_by_distance(tmp_path):
    cfg = compose_cfg(["data.num_train=300", "data.num_val=40", "data.num_test=80", "data.max_attractors=2",
                       "model.hidden_size=16", "embedding.dim=8", "task.batch_size=8", "task.bptt=32",
                       "task.generate.max_new_tokens=10", "task.generate.num_samples=1", "trainer.max_epochs=1",
                       "trainer.enable_progress_bar=false", "logger=none"], root=tmp_path)
    result = run(cfg)
    keys = {k for k in result if k.startswith("test/agreement_acc")}
    assert keys == {"test/agreement_acc", "test/agreement_acc_d0", "test/agreement_acc_d1", "test/agreement_acc_d2"}
    assert all(0 <= result[k] <= 1 for k in keys)


# -- bad combinations fail before any run ---------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.mark.parametrize("overrides,message", [
    (["task=adding", "data=sst2"], "data=sst2 is a dataset for task=classify, not task=adding; datasets for "
                                   "task=adding: adding$"),
    (["task=copy", "data=adding"], "data=adding is a dataset for task=adding, not task=copy; datasets for "
                                   "task=copy: copy, selective_copy$"),
    (["task=adding", "data=synthetic"], "data=synthetic is a dataset for task=lm, not task=adding"),
    (["task=lm", "data=adding"], "data=adding is a dataset for task=adding, not task=lm"),
    (["task=adding", "data=adding", "model=lstm", "model.bidirectional=true"],
     "model=lstm is bidirectional: the long-range tasks read the state left to right"),
    (["task=adding", "data=adding", "embedding=onehot"], "embedding=onehot does not apply to task=adding"),
    (["task=copy", "data=copy", "embedding=word2vec"], "embedding=word2vec does not apply to task=copy"),
    (["task=adding", "data=adding", "task.recurrent_init=xavier"],
     "unknown task.recurrent_init 'xavier'; valid choices: default, identity, normal, orthogonal, scaled"),
    (["task=copy", "data=copy", "task.recurrent_scale=-1"], "task.recurrent_scale=-1 must be > 0"),
])
def test_impossible_combinations_fail_before_any_run(store, overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        run(compose_cfg([*overrides, "trainer.enable_progress_bar=false"], root=store))
    assert "\n" not in str(e.value)
    assert runs_in(store)[1] == []


# -- report: where a cell stops beating the baseline, and rows that never mix settings -----------------
def test_report_finds_the_length_where_a_cell_stops_beating_the_baseline():
    from seqbench.report.sections.longrange import beats, stops_beating

    assert beats(0.10, 1 / 6, lower_is_better=True) and not beats(0.16, 1 / 6, lower_is_better=True)
    assert beats(0.30, 0.125, lower_is_better=False) and not beats(0.15, 0.125, lower_is_better=False)
    base = {50: 0.167, 100: 0.167, 200: 0.167}
    assert stops_beating([50, 100, 200], {50: 0.001, 100: 0.002, 200: 0.16}, base, True) == "200"
    assert stops_beating([50, 100, 200], {50: 0.17, 100: 0.16}, base, True).startswith("≤ 50")
    assert stops_beating([50, 100, 200], {50: 0.0, 100: 0.0, 200: 0.0}, base, True).startswith("> 200")


def test_report_labels_tell_apart_settings_that_share_a_cell():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from seqbench.report.sections.longrange import distinct_labels, variant_labels

    def item(model, length, clip=0.5, seed=0):
        cfg = OmegaConf.create({"model": {"name": model}, "data": {"length": length},
                                "trainer": {"gradient_clip_val": clip}, "seed": seed})
        over = [f"model={model}", f"data.length={length}", f"seed={seed}"] + \
            ([f"trainer.gradient_clip_val={clip}"] if clip != 0.5 else [])
        return SimpleNamespace(cfg=cfg, overrides=over, hash=f"{model}{length}{clip}{seed}")

    items = [item(m, n, seed=s) for m in ("rnn", "lstm") for n in (50, 100) for s in (0, 1)] + \
        [item("rnn", n, clip=0) for n in (50, 100)]
    labels = variant_labels(items, exclude=("data.length",))
    assert labels["lstm500.50"] == labels["lstm1000.51"] == "lstm"
    assert labels["rnn500.50"] != labels["rnn5000"] and "gradient_clip_val=0" in labels["rnn5000"]
    rows = distinct_labels(items, lambda e: e.cfg.model.name)           # the main report's rows
    assert rows["lstm500.50"] == "lstm, length=50" and rows["lstm500.51"] == rows["lstm500.50"]
    only = [i for i in items if i.cfg.model.name == "lstm" and i.cfg.data.length == 50]
    assert set(distinct_labels(only, lambda e: e.cfg.model.name).values()) == {"lstm"}   # seeds only: no suffix
