"""End to end: a tiny default run lands in MLflow as one FINISHED run with everything a user needs."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import TINY, cli, needs_data
from seqbench.errors import ConfigError, DataError
from seqbench.run import run
from seqbench.tracking import config_hash


def runs_in(root):
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny default run shared by the assertions below (a few seconds)."""
    from conftest import compose_cfg

    root = tmp_path_factory.mktemp("run")
    cfg = compose_cfg([*TINY, "trainer.max_epochs=3"], root=root)
    return root, cfg, run(cfg)


def test_one_finished_run_with_params_tags_artifacts(tiny_run):
    root, cfg, result = tiny_run
    client, runs = runs_in(root)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_id == result["run_id"]
    assert r.info.run_name == "lm/synthetic/char/lstm/s0"
    tags = r.data.tags
    for key, value in {"task": "lm", "data": "synthetic", "tokenizer": "char", "model": "lstm",
                       "seed": "0", "config_hash": config_hash(cfg)}.items():
        assert tags[key] == value
    assert len(tags["git_sha"]) >= 7
    params = r.data.params
    assert params["model.hidden_size"] == "32" and params["task.bptt"] == "32"
    assert params["trainer.max_epochs"] == "3" and params["seed"] == "0"
    # the columns a comparison needs: the primary metric (and which it is), size, budget used, protocol
    assert r.data.metrics["primary"] == r.data.metrics["test/bits_per_char"]
    assert tags["primary_metric"] == "test/bits_per_char (lower is better)"
    assert r.data.metrics["num_parameters"] == result["num_parameters"] > 0
    assert r.data.metrics["epochs_trained"] == 3 and "converged" not in r.data.metrics  # no early stopping
    assert tags["mlflow.note.content"].startswith("lm/synthetic/char/lstm/s0: task **lm**, data **synthetic**")
    assert "budget 3 epoch(s), no early stopping" in tags["mlflow.note.content"]
    assert "mlflow.parentRunId" not in tags  # a single run is a top-level run
    artifacts = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "samples.txt", "tokenizer.json", "checkpoints"} <= artifacts
    samples = client.download_artifacts(r.info.run_id, "samples.txt", str(root))
    assert open(samples).read().startswith("# decoding=greedy prompt='the '")


def test_metrics_are_finite_and_consistent(tiny_run):
    root, _, result = tiny_run
    for key in ("val/loss", "test/loss", "val/bits_per_char", "test/perplexity", "train/tokens_per_s"):
        assert math.isfinite(result[key]), key
    # char tokenizer: one token per character, so bits/char = loss / ln 2 (and = bits/byte: ASCII)
    assert result["test/bits_per_char"] == pytest.approx(result["test/loss"] / math.log(2), rel=1e-6)  # logged as float32
    assert result["test/bits_per_byte"] == pytest.approx(result["test/bits_per_char"], rel=1e-6)  # logged as float32
    assert result["test/perplexity"] == pytest.approx(math.exp(result["test/loss"]), rel=1e-6)  # logged as float32
    # far better than a uniform guess over the vocabulary
    client, runs = runs_in(root)
    run_id = runs[0].info.run_id
    val = [m.value for m in client.get_metric_history(run_id, "val/loss")]
    train = [m.value for m in client.get_metric_history(run_id, "train/loss_step")]
    assert len(val) == 3 and len(train) >= 5
    assert val[-1] < val[0] and train[-1] < train[0]  # loss decreases
    assert client.get_metric_history(run_id, "test/bits_per_char")


def test_checkpoint_loads_weights_only_and_resumes(tiny_run, tmp_path):
    root, cfg, result = tiny_run
    from conftest import compose_cfg

    last = next(root.rglob("last.ckpt"))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 2 and "state_dict" in ckpt
    resumed = run(compose_cfg([*TINY, "trainer.max_epochs=4", f"ckpt_path={last}"], root=tmp_path))
    _, runs = runs_in(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    epochs = [m.value for m in client.get_metric_history(runs[0].info.run_id, "epoch")]
    assert min(epochs) >= 3  # started from epoch 3: the first 3 epochs were restored
    assert math.isfinite(resumed["val/loss"])


def test_same_seed_same_metrics(make_cfg):
    a = run(make_cfg("logger=none", "trainer.max_epochs=1"))
    b = run(make_cfg("logger=none", "trainer.max_epochs=1"))
    c = run(make_cfg("logger=none", "trainer.max_epochs=1", "seed=1"))
    assert a["val/loss"] == b["val/loss"] and a["test/loss"] == b["test/loss"]
    assert a["val/loss"] != c["val/loss"]


@pytest.mark.parametrize("model", ["rnn", "gru"])
def test_other_cells_train(make_cfg, model, tmp_path):
    result = run(make_cfg(f"model={model}", "trainer.max_epochs=1"))
    _, runs = runs_in(tmp_path)
    assert runs[0].data.tags["model"] == model and runs[0].info.status == "FINISHED"
    assert result["val/bits_per_char"] < math.log2(40)


def test_missing_corpus_is_a_clear_error_and_creates_no_run(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("SEQBENCH_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        run(make_cfg("data=timemachine"))
    msg = str(e.value)
    assert f"{tmp_path}/nowhere/timemachine/timemachine.txt" in msg and "SEQBENCH_DATA_DIR" in msg
    assert "d2l-data" in msg  # where to download it
    assert runs_in(tmp_path)[1] == []


@pytest.mark.parametrize("content,fragment", [(b"  \n\n", "is empty"),
                                              (b"good text \xff\xfe bad", "undecodable byte 0xff at offset 10")])
def test_empty_or_undecodable_corpus(make_cfg, tmp_path, content, fragment):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=fragment):
        run(make_cfg("data=timemachine", f"data.path={bad}"))
    assert runs_in(tmp_path)[1] == []


def test_invalid_config_creates_no_run(make_cfg, tmp_path):
    with pytest.raises(ConfigError):
        run(make_cfg("model.impl=warp"))
    assert runs_in(tmp_path)[1] == []


@needs_data("timemachine", "timemachine.txt")
def test_timemachine_from_data_dir(make_cfg, tmp_path):
    result = run(make_cfg("data=timemachine", "trainer.max_epochs=1", "trainer.limit_train_batches=20"))
    _, runs = runs_in(tmp_path)
    assert runs[0].data.tags["data"] == "timemachine"
    assert math.isfinite(result["test/bits_per_char"])


def test_cli_unknown_model_is_one_line_and_no_run(tmp_path):
    p = cli("model=quantum", root=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines == ["seqbench: error: unknown model 'quantum'; valid choices: "
                     + ", ".join(sorted(lines[0].split("valid choices: ")[1].split(", ")))]
    assert "gru" in lines[0] and "lstm" in lines[0] and "rnn" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_bad_value_is_one_line(tmp_path):
    p = cli("model.impl=warp", *TINY, root=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == ("seqbench: error: unknown model.impl 'warp'; valid choices: auto, fused, "
                                "scratch")


def wait_for(predicate, timeout=120.0, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def running_runs(db: Path) -> int:
    """RUNNING runs in the store, read without MLflow's client (which would race the writer's
    schema migration of a fresh store)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("multirun", [False, True], ids=["single", "joblib-multirun"])
def test_terminated_run_is_recorded_killed(tmp_path, multirun):
    """SIGTERM (a killed sweep, SLURM preemption) ends every run in flight as KILLED with the signal
    as reason; also in joblib worker processes, where the job function runs outside main()."""
    sweep = ["-m", "model=rnn,gru", "hydra/launcher=local", "hydra.launcher.n_jobs=2", "num_threads=1"] \
        if multirun else []
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "seqbench", *sweep, *TINY, "trainer.max_epochs=500"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    expected = 2 if multirun else 1
    try:
        wait_for(lambda: running_runs(tmp_path / "mlflow.db") == expected)
        time.sleep(2)  # inside training
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, runs = runs_in(tmp_path)
    assert len(runs) == expected
    for r in runs:
        assert r.info.status == "KILLED", (r.info.status, r.data.tags.get("failure_reason"), stderr[-4000:])
        assert "Terminated: terminated by signal 15 (SIGTERM)" in r.data.tags["failure_reason"]


@pytest.mark.parametrize("patience, min_delta, epochs, converged", [
    (1, 100.0, 2, 1.0),   # no epoch improves val/loss by 100 nats: stops after one epoch of patience
    (5, 0.0, 3, 0.0),     # still improving when the 3-epoch budget runs out: not converged
])
def test_early_stopping_records_convergence(tmp_path, patience, min_delta, epochs, converged):
    from conftest import compose_cfg

    cfg = compose_cfg([*TINY, "trainer.max_epochs=3", "task.probe=false", "task.generate.num_samples=1",
                       f"early_stopping.patience={patience}", f"early_stopping.min_delta={min_delta}"], root=tmp_path)
    result = run(cfg)
    assert result["epochs_trained"] == epochs and result["converged"] == converged
    _, (r,) = runs_in(tmp_path)
    assert r.data.metrics["converged"] == converged and r.data.metrics["epochs_trained"] == epochs
    assert len({m.step for m in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        r.info.run_id, "val/loss")}) == epochs
    assert f"early stopping on val/loss (patience {patience}" in r.data.tags["mlflow.note.content"]
