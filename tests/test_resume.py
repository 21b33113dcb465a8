"""Resume you can trust: a FINISHED run is reused only by the same config run by the same code
(``code_version`` tag), unless ``reuse_other_code=true``; the sweep driver does not even launch a
grid whose every configuration is done."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from seqbench.tracking import CODE_VERSION_VARIABLE, Tracker, _source_hash, code_version, config_hash

CFG = {"task": {"name": "lm"}, "data": {"name": "d"}, "tokenizer": {"name": "t"}, "model": {"name": "m", "cell": "m"},
       "seed": 0, "paths": {"root": "/x"}, "skip_finished": True, "reuse_other_code": False}


def test_find_finished_reuses_only_runs_of_the_same_code(tmp_path, monkeypatch):
    monkeypatch.delenv(CODE_VERSION_VARIABLE, raising=False)
    tracker = Tracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="seqbench",
                      artifact_location=str(tmp_path / "a"))
    cfg = OmegaConf.create(CFG)
    reuse = OmegaConf.merge(cfg, {"reuse_other_code": True})
    assert config_hash(reuse) == config_hash(cfg)  # a flag about reuse, not about what is trained

    def finished(version: str) -> str:
        run = tracker.client.create_run(tracker.experiment_id,
                                        tags={"config_hash": config_hash(cfg), "code_version": version})
        tracker.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    other = finished("0123456789abcdef")  # made by other code
    assert tracker.find_finished(cfg) is None
    found = tracker.find_finished(reuse)
    assert found["run_id"] == other and found["code_version"] == "0123456789abcdef"
    time.sleep(0.01)
    mine = finished(code_version())
    assert tracker.find_finished(cfg)["run_id"] == mine
    assert tracker.finished_versions() == {config_hash(cfg): {"0123456789abcdef", code_version()}}
    monkeypatch.setenv(CODE_VERSION_VARIABLE, "0123456789abcdef")  # the override is the code version
    assert code_version() == "0123456789abcdef" and tracker.find_finished(cfg)["run_id"] == other


def test_every_run_is_tagged_with_its_code_version(tmp_path, monkeypatch):
    monkeypatch.delenv(CODE_VERSION_VARIABLE, raising=False)
    tracker = Tracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="seqbench",
                      artifact_location=str(tmp_path / "a"))
    with tracker.active(OmegaConf.create(CFG)):
        pass
    tags = tracker.client.get_run(tracker.run_id).data.tags
    assert tags["code_version"] == code_version() and len(tags["code_version"]) == 16


def test_code_version_hashes_the_package_and_configs_only(tmp_path):
    """Files under src/seqbench and conf/ (tracked or untracked but not ignored) make the code;
    docs, studies, the report package and ignored files (caches) do not."""
    def version() -> str:
        _source_hash.cache_clear()
        return _source_hash(str(tmp_path))

    (tmp_path / "src" / "seqbench").mkdir(parents=True)
    (tmp_path / "conf").mkdir()
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "src" / "seqbench" / "a.py").write_text("x = 1\n")
    (tmp_path / "conf" / "config.yaml").write_text("seed: 0\n")
    outside_git = version()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("__pycache__/\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    clean = version()
    assert clean == outside_git  # the contents decide, not how they are stored
    (tmp_path / "pipelines" / "study.yaml").write_text("name: s\n")
    (tmp_path / "README.md").write_text("docs\n")
    (tmp_path / "src" / "seqbench" / "report").mkdir()             # reads runs, never makes them
    (tmp_path / "src" / "seqbench" / "report" / "tables.py").write_text("rows = []\n")
    (tmp_path / "src" / "seqbench" / "__pycache__").mkdir()
    (tmp_path / "src" / "seqbench" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert version() == clean
    (tmp_path / "src" / "seqbench" / "a.py").write_text("x = 2\n")  # an uncommitted edit
    edited = version()
    assert edited != clean
    (tmp_path / "src" / "seqbench" / "new.py").write_text("y = 1\n")  # an untracked module
    assert version() not in (clean, edited)
    (tmp_path / "src" / "seqbench" / "new.py").unlink()
    (tmp_path / "src" / "seqbench" / "a.py").write_text("x = 1\n")
    assert version() == clean


# -- the sweep driver ------------------------------------------------------------------------------
TINY_COMMON = ["trainer.enable_progress_bar=false", "data.num_train=300", "data.num_val=50",
               "data.num_test=50", "model.hidden_size=16", "embedding.dim=8", "trainer.max_epochs=1",
               "task.batch_size=8", "task.eval_batch_size=4", "task.bptt=32", "task.generate.max_new_tokens=20"]


def sweep(study: Path, root: Path, version: str, *extra: str):
    env = {**os.environ, "SEQBENCH_ROOT": str(root), CODE_VERSION_VARIABLE: version}
    started = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "seqbench.sweep", str(study), "--launcher", "basic", *extra],
                       cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout, time.perf_counter() - started


def job_runs(root: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench/resume")
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("task") != "study"]


def multiruns(root: Path) -> list[Path]:
    return sorted((root / "outputs" / "multirun").glob("*/*"))


def test_a_finished_grid_is_not_launched_until_the_code_changes(tmp_path):
    study = tmp_path / "resume.yaml"
    study.write_text(yaml.safe_dump({"name": "resume", "seeds": [0], "common": TINY_COMMON,
                                     "grids": [{"name": "cells", "overrides": ["model=rnn,gru"]}]}))
    out, _ = sweep(study, tmp_path, "v1")
    assert "== resume: 2/2 configurations FINISHED, 0 failed, 0 missing" in out
    first = job_runs(tmp_path)
    assert sorted(r.data.tags["model"] for r in first) == ["gru", "rnn"]
    assert all(r.data.tags["code_version"] == "v1" and r.data.metrics["hidden_size"] == 16 for r in first)
    assert len(multiruns(tmp_path)) == 1

    # same code: every configuration is done, the grid is not launched, the study resumes in seconds
    out, _ = sweep(study, tmp_path, "v1")
    assert "== resume: all 2 configurations FINISHED by this code" in out and "nothing to run" in out
    assert len(multiruns(tmp_path)) == 1 and len(job_runs(tmp_path)) == 2  # no job started, no run added

    # other code: its runs are not reused unless asked for ...
    out, _ = sweep(study, tmp_path, "v3", "reuse_other_code=true")
    assert "== resume: compare: 2/2 configurations already have a FINISHED run to reuse" in out
    assert "== resume: compare: cells: skipped, all 2 configurations FINISHED" in out
    assert "== resume: 2/2 configurations FINISHED, 0 failed, 0 missing" in out and len(multiruns(tmp_path)) == 1
    out, _ = sweep(study, tmp_path, "v2")
    assert "already have a FINISHED run" not in out and "cells: skipped" not in out
    assert out.count("skipped: FINISHED run") == 0
    runs = job_runs(tmp_path)
    rerun = [r for r in runs if r.info.run_id not in {f.info.run_id for f in first}]
    assert sorted((r.data.tags["model"], r.data.tags["code_version"], r.info.status) for r in rerun) == \
        [("gru", "v2", "FINISHED"), ("rnn", "v2", "FINISHED")]
    assert {r.data.tags["config_hash"] for r in rerun} == {r.data.tags["config_hash"] for r in first}
    assert len(multiruns(tmp_path)) == 2
