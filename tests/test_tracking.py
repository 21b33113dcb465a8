"""Tracking: parallel writers to one local sqlite store lose nothing; failures end FAILED with reason."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from seqbench.tracking import Tracker, flatten

STEPS = 40


def writer(uri: str, artifacts: str, k: int) -> str:
    tracker = Tracker(tracking_uri=uri, experiment="seqbench", artifact_location=artifacts)
    cfg = OmegaConf.create({"task": {"name": "lm"}, "data": {"name": "synthetic"}, "tokenizer": {"name": "char"},
                            "model": {"name": "lstm", "cell": "lstm"}, "seed": k, "paths": {"root": "/x"}})
    with tracker.active(cfg):
        for step in range(STEPS):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "writer": k}, step=step)
        tracker.log_text(f"writer {k}", "note.txt")
    return tracker.run_id


def test_parallel_writers_lose_nothing(tmp_path):
    uri, artifacts = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts")
    Tracker(tracking_uri=uri, experiment="seqbench", artifact_location=artifacts)  # create once, then fan out
    n = 4
    with mp.get_context("spawn").Pool(n) as pool:
        ids = pool.starmap(writer, [(uri, artifacts, k) for k in range(n)])
    client = MlflowClient(uri)
    assert len(set(ids)) == n
    for k, run_id in enumerate(ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["seed"] == str(k)
        history = client.get_metric_history(run_id, "loss")
        assert sorted(m.step for m in history) == list(range(STEPS))
        assert {m.value for m in client.get_metric_history(run_id, "writer")} == {float(k)}
        assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml", "note.txt"]


def test_exception_ends_run_failed_with_reason(tmp_path):
    tracker = Tracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="seqbench",
                      artifact_location=str(tmp_path / "a"))
    cfg = OmegaConf.create({"task": {"name": "lm"}, "data": {"name": "d"}, "tokenizer": {"name": "t"},
                            "model": {"name": "m", "cell": "m"}, "seed": 0, "paths": {"root": "/x"}})
    with pytest.raises(RuntimeError):
        with tracker.active(cfg):
            raise RuntimeError("out of memory at step 7")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "RuntimeError: out of memory at step 7"


def test_flatten_nested_config():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
