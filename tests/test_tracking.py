"""Tracking: parallel writers to one local sqlite store lose nothing; failures end FAILED with reason."""

from __future__ import annotations

import contextlib
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


def tiny_tracker_and_cfg(tmp_path):
    tracker = Tracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="seqbench",
                      artifact_location=str(tmp_path / "a"))
    cfg = OmegaConf.create({"task": {"name": "lm"}, "data": {"name": "d"}, "tokenizer": {"name": "t"},
                            "model": {"name": "m", "cell": "m"}, "seed": 0, "paths": {"root": "/x"}})
    return tracker, cfg


def test_signal_while_the_run_is_being_set_up_ends_it_killed(tmp_path, monkeypatch):
    """SIGTERM can land after the run is created but before training (its params and config are
    still being written, seconds on a loaded machine): the run ends KILLED, never stays RUNNING."""
    from seqbench.errors import Terminated

    tracker, cfg = tiny_tracker_and_cfg(tmp_path)

    def signalled(*args, **kwargs):
        raise Terminated(15)

    monkeypatch.setattr(tracker, "log_text", signalled)  # the last write of start(): config.yaml
    with pytest.raises(Terminated):
        with tracker.active(cfg):
            pytest.fail("the job body must not run")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert run.data.params["seed"] == "0"
    assert run.data.tags["failure_reason"] == "Terminated: terminated by signal 15 (SIGTERM)"


def test_signal_that_surfaces_as_a_store_error_ends_the_run_killed(tmp_path, monkeypatch):
    """A SIGTERM that lands inside a store write comes out of MLflow as its own error ("database is
    locked"); the process was told to stop, so the run ends KILLED with the signal as reason."""
    from mlflow.exceptions import MlflowException

    from seqbench import stopping

    tracker, cfg = tiny_tracker_and_cfg(tmp_path)
    monkeypatch.setattr(stopping, "stopped_by", [15])
    with pytest.raises(MlflowException):
        with tracker.active(cfg):
            raise MlflowException("(sqlite3.OperationalError) database is locked")
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    reason = run.data.tags["failure_reason"]
    assert reason.startswith("Terminated: terminated by signal 15 (SIGTERM)") and "database is locked" in reason


@pytest.mark.parametrize("ending", ["FINISHED", "KILLED"])
def test_the_end_of_a_run_is_retried_while_the_store_is_locked(tmp_path, monkeypatch, ending):
    """Parallel jobs that end at the same moment collide in a sqlite store, which refuses one write
    at once ("database is locked"): the end is retried until it lands, never left RUNNING."""
    from mlflow.exceptions import MlflowException

    from seqbench.errors import Terminated

    tracker, cfg = tiny_tracker_and_cfg(tmp_path)
    attempts = []
    set_terminated = MlflowClient.set_terminated

    def locked_twice(self, run_id, status=None, end_time=None):
        attempts.append(status)
        if len(attempts) <= 2:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return set_terminated(self, run_id, status, end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", locked_twice)
    with pytest.raises(Terminated) if ending == "KILLED" else contextlib.nullcontext():
        with tracker.active(cfg):
            if ending == "KILLED":
                raise Terminated(15)
    assert attempts == [ending] * 3
    assert tracker.client.get_run(tracker.run_id).info.status == ending


def test_flatten_nested_config():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_mlflow_environment_variables_are_honoured(tmp_path):
    """As in every MLflow tool, MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME choose the store and
    the experiment; the project's own store is not created."""
    from conftest import TINY, cli

    env = {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "MLFLOW_EXPERIMENT_NAME": "mine"}
    p = cli(*TINY, "trainer.max_epochs=1", "task.probe=false", root=tmp_path, env_extra=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/x.db")  # relative to the working directory, as MLflow reads it
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["logger.tracking_uri"] == "sqlite:///x.db"


def test_explicit_tracking_uri_wins_over_the_environment(tmp_path, monkeypatch):
    from conftest import compose_cfg

    assert compose_cfg(root=tmp_path).logger.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"  # the default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-exp")
    cfg = compose_cfg(root=tmp_path)
    assert (cfg.logger.tracking_uri, cfg.logger.experiment) == ("http://team:5000", "team-exp")
    cfg = compose_cfg(["logger.tracking_uri=sqlite:///explicit.db", "logger.experiment=mine", "study=cells"], root=tmp_path)
    assert (cfg.logger.tracking_uri, cfg.logger.experiment) == ("sqlite:///explicit.db", "mine")
    from seqbench.tracking import experiment_name

    assert experiment_name(cfg) == "mine/cells"  # a study's runs: the study's own experiment


def test_system_metrics_are_logged_when_enabled(tmp_path):
    import time

    cfg = OmegaConf.create({"task": {"name": "lm"}, "data": {"name": "d"}, "tokenizer": {"name": "t"},
                            "model": {"name": "m", "cell": "m"}, "seed": 0, "paths": {"root": "/x"}})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    on = Tracker(tracking_uri=uri, experiment="seqbench", artifact_location=str(tmp_path / "a"),
                 log_system_metrics=True, system_metrics_interval_s=0.2)
    with on.active(cfg):
        time.sleep(1.5)
    off = Tracker(tracking_uri=uri, experiment="seqbench", artifact_location=str(tmp_path / "a"))
    with off.active(cfg):
        time.sleep(0.5)
    client = MlflowClient(uri)
    system = lambda run_id: {k for k in client.get_run(run_id).data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system(on.run_id)
    assert system(off.run_id) == set()  # off by default


def test_a_signal_inside_a_store_call_is_raised_after_the_call_returns(monkeypatch):
    """SIGTERM that lands inside an MLflow/SQLAlchemy call is held until the call has returned:
    raised inside, it would leave the call's transaction open and the store's lock held."""
    import signal
    import time

    from seqbench import stopping
    from seqbench.errors import Terminated

    monkeypatch.setattr(stopping, "stopped_by", [])
    monkeypatch.setattr(stopping, "_deferred_since", [])
    store_code = {"__name__": "sqlalchemy.engine.fake"}  # a function whose frames count as store code
    exec("def write(seconds, done):\n"
         "    import os, signal, time\n"
         "    os.kill(os.getpid(), signal.SIGTERM)\n"
         "    end = time.monotonic() + seconds\n"
         "    while time.monotonic() < end:\n"
         "        pass\n"
         "    done.append(True)\n", store_code)
    previous = stopping.handle_signals(stopping.stop_job)
    done, raised_after = [], None
    try:
        with pytest.raises(Terminated, match="SIGTERM"):
            store_code["write"](0.3, done)  # the signal is handled (deferred) while this runs
            raised_after = time.monotonic()
            while time.monotonic() < raised_after + 5:
                pass
        assert done == [True] and raised_after is not None  # the call finished; the signal came after
        assert stopping.stopped_by == [signal.SIGTERM]
    finally:
        stopping.restore_signals(previous)
