"""Sweeps: Hydra multirun with the joblib launcher, resumable through config hashes in MLflow,
fault tolerant (a diverging job is FAILED, the others finish), and the report built from MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from seqbench.launch import run_multiruns
from seqbench.study import check_base, expand, load_study, studies
from seqbench.study import sweeps
from seqbench.sweep import grid_commands, sweep_commands
from seqbench.errors import ConfigError
from seqbench.validate import CONF_DIR, validate

TINY_COMMON = ["trainer.enable_progress_bar=false", "data.num_train=300", "data.num_val=50",
               "data.num_test=50", "model.hidden_size=16", "embedding.dim=8", "trainer.max_epochs=2",
               "task.batch_size=8", "task.eval_batch_size=4", "task.bptt=32", "task.generate.max_new_tokens=20"]


def write_study(path: Path) -> Path:
    study = {"name": "smoke", "description": "two cells and one injected divergence",
             "seeds": [0, 1], "common": TINY_COMMON,
             "grids": [{"name": "cells", "overrides": ["model=rnn,gru"]},
                       {"name": "injected failure",
                        "overrides": ["model=lstm", "optimizer=sgd", "optimizer.lr=1e30",
                                      "trainer.gradient_clip_val=null"]}]}
    path.write_text(yaml.safe_dump(study))
    return path


def seqbench(module: str, *args, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQBENCH_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


def runs(root: Path, study: str = "smoke"):
    """The study's job runs (its experiment ``seqbench/<study>``, without the parent run)."""
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name(f"seqbench/{study}")
    return client, [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("task") != "study"]


def parent_run(root: Path, study: str = "smoke"):
    """The study's parent run; asserts it is the only one and that every job is nested under it."""
    client, jobs = runs(root, study)
    exp = client.get_experiment_by_name(f"seqbench/{study}")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.task = 'study'")
    assert parent.info.run_name == study and parent.data.tags["seqbench.study_run"] == study
    assert jobs and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in jobs)
    return client, parent


def test_study_files_and_commands():
    study = load_study("cells")
    commands = grid_commands(study, "local", jobs=2)
    # the comparison: one multirun per grid and chosen setting (nothing chosen yet: the first candidates)
    assert len(commands) == len(study["grids"])
    for cmd in commands:
        assert cmd[1:4] == ["-m", "seqbench", "-m"]
        assert "skip_finished=true" in cmd and "study=cells" in cmd and "seed=0,1,2,3" in cmd
        assert "hydra/launcher=local" in cmd and "hydra.launcher.n_jobs=2" in cmd
        assert sum(o.startswith("optimizer.lr=") for o in cmd) == 1  # its point's (chosen) learning rate
    tune = sweep_commands(study, sweeps(study, "tune"), "local", jobs=2)
    assert len(tune) == len(study["grids"])
    assert all("stage=tune" in c and "seed=100" in c and any(o.startswith("optimizer.lr=") and "," in o for o in c)
               for c in tune)
    # one multirun at a time with every job slot; each in its own sweep dir (two may start in the same second)
    assert all("hydra.launcher.n_jobs=2" in c and "num_threads=1" in c for c in tune)
    dirs = [next(o for o in c if o.startswith("hydra.sweep.dir=")) for c in tune]
    assert len(set(dirs)) == len(dirs) and dirs[0].endswith("_cells_0")
    assert "hydra/launcher=slurm" in grid_commands(study, "slurm")[0]
    assert "hydra/launcher=submitit_local" in grid_commands(study, "submitit_local")[0]
    with pytest.raises(ConfigError, match="unknown launcher 'k8s'; valid choices: basic, local, slurm, submitit_local"):
        grid_commands(study, "k8s")
    with pytest.raises(ConfigError, match="unknown study 'nope'; valid choices: .*cells"):
        load_study("nope")


SLEEPER = ("import sys, time; log = open(sys.argv[1], 'a'); log.write(f'start {sys.argv[2]} {time.time()}\\n'); "
           "log.flush(); time.sleep(float(sys.argv[3])); log.write(f'end {sys.argv[2]} {time.time()}\\n')")


def sleeper(log: Path, name: str, seconds: float) -> list[str]:
    """A command line that logs its start and end to ``log``."""
    return [sys.executable, "-c", SLEEPER, str(log), name, str(seconds)]


def timeline(log: Path) -> tuple[dict[str, float], dict[str, float]]:
    events = [line.split() for line in log.read_text().splitlines()]
    return ({name: float(t) for kind, name, t in events if kind == "start"},
            {name: float(t) for kind, name, t in events if kind == "end"})


def test_multiruns_run_one_at_a_time_in_order_and_follow_ups_join_the_queue(tmp_path):
    """Each command starts when the one before it has ended, in order; ``then(i)`` queues the
    multiruns that waited for the i-th (a tuned grid's comparison after its own tuning) at the end
    of the queue as soon as it has exited."""
    log, announced, asked = tmp_path / "log", [], []

    def then(i: int):
        asked.append(i)
        return [sleeper(log, "b2", 0.1), sleeper(log, "b3", 0.1)] if i == 1 else []

    commands = [sleeper(log, "a", 0.5), sleeper(log, "b", 0.2), sleeper(log, "c", 0.1)]
    assert run_multiruns(commands, announce=announced.append, then=then) is None
    start, end = timeline(log)
    assert announced == [0, 1, 2, 3, 4] and asked == [0, 1, 2, 3, 4]
    order = sorted(start, key=start.get)
    assert order == ["a", "b", "c", "b2", "b3"]
    assert all(start[later] >= end[earlier] for earlier, later in zip(order, order[1:]))  # never two at once


def test_a_failing_follow_up_starts_nothing_more_and_raises_once_the_one_in_flight_has_ended(tmp_path, capsys):
    """When ``then`` raises (choosing a tuned grid's settings failed: e.g. MLflow unreadable), no
    other multirun starts and the error reaches the driver: it never leaves a multirun behind."""
    log = tmp_path / "log"

    def then(i: int):
        if i == 1:
            raise RuntimeError("the tuning runs could not be read")
        return [sleeper(log, "unlocked", 0.1)]

    commands = [sleeper(log, "first", 0.2), sleeper(log, "tuning", 0.2), sleeper(log, "queued", 0.1)]
    with pytest.raises(RuntimeError, match="the tuning runs could not be read"):
        run_multiruns(commands, then=then)
    start, end = timeline(log)
    assert sorted(start) == ["first", "tuning"] and set(end) == set(start)  # nothing after the failure
    assert "RuntimeError: the tuning runs could not be read; starting no more multiruns" in capsys.readouterr().err


def test_a_signal_is_passed_to_the_multirun_in_flight_and_nothing_more_starts(tmp_path):
    """SIGTERM to the driver reaches the running multirun (which records its runs KILLED) and
    stops the queue; the driver returns the signal."""
    log = tmp_path / "log"
    commands = [sleeper(log, "long", 30.0), sleeper(log, "next", 0.1)]
    timer = __import__("threading").Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    began = time.time()
    assert run_multiruns(commands) == signal.SIGTERM
    start, end = timeline(log)
    assert list(start) == ["long"] and not end and time.time() - began < 10


def test_a_finished_study_resumes_without_composing_and_only_while_its_runs_are_there(tmp_path):
    """A study whose every configuration FINISHED records its fingerprint and config hashes on its
    parent: the same command again stops after one search ("nothing to run", no new run); once a
    run is deleted, or under other code, it checks every configuration and reruns what is missing."""
    study = tmp_path / "done.yaml"
    study.write_text(yaml.safe_dump({"name": "done", "seeds": [0], "common": TINY_COMMON,
                                     "grids": [{"name": "cells", "overrides": ["model=rnn,gru"]}]}))
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0 and "2/2 configurations FINISHED" in p.stdout, p.stderr[-3000:]
    client, parent = parent_run(tmp_path, "done")
    assert parent.data.tags["seqbench.study_fingerprint"] and "configurations.json" in {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == (f"== done: all 2 configurations FINISHED by this code (parent run {parent.info.run_id}), "
                                f"nothing to run; report: make report STUDY=done")
    assert len(runs(tmp_path, "done")[1]) == 2
    gone = runs(tmp_path, "done")[1][0]
    client.delete_run(gone.info.run_id)
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0 and "nothing to run" not in p.stdout and p.stdout.count("skipped: FINISHED run") == 1
    assert sorted(r.data.tags["model"] for r in runs(tmp_path, "done")[1]) == ["gru", "rnn"]
    check = ("from seqbench.resume import finished_before, fingerprint; from seqbench.study import load_study; "
             f"s = load_study({str(study)!r}); "
             f"print(finished_before({str(tmp_path)!r}, 'done', fingerprint(s, 'local', 2, [], {str(tmp_path)!r})))")
    for code, expected in (("", f"('{parent.info.run_id}', 2)"), ("other-code", "None")):  # other code: check all
        env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path), "SEQBENCH_CODE_VERSION": code}
        done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.stdout.strip() == expected, done.stderr[-2000:]


def test_sweep_is_fault_tolerant_resumable_and_reported(tmp_path):
    study = write_study(tmp_path / "smoke.yaml")
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]  # FAILED runs are results, listed; nothing is missing
    assert "== smoke: 0 tuning + 6 comparison configurations" in p.stdout
    assert "== smoke: 4/6 configurations FINISHED, 2 failed, 0 missing" in p.stdout
    assert p.stdout.count("  FAILED: lm/synthetic/char/lstm/s") == 2
    client, first = runs(tmp_path)
    status = sorted((r.data.tags["model"], r.data.tags["seed"], r.info.status) for r in first)
    assert status == [("gru", "0", "FINISHED"), ("gru", "1", "FINISHED"), ("lstm", "0", "FAILED"),
                      ("lstm", "1", "FAILED"), ("rnn", "0", "FINISHED"), ("rnn", "1", "FINISHED")]
    client, parent = parent_run(tmp_path)  # one place in the UI: the study's parent and its nested jobs
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["configurations_finished"] == 4 and parent.data.metrics["configurations_failed"] == 2
    assert "study.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert client.get_experiment_by_name("seqbench") is None  # nothing went to the single-run experiment
    for r in first:
        assert r.data.tags["study"] == "smoke"
        if r.info.status == "FAILED":
            assert "training diverged" in r.data.tags["failure_reason"]
        else:  # parallel jobs lost nothing: every metric and artifact arrived
            assert len(client.get_metric_history(r.info.run_id, "val/loss")) == 2
            assert {"config.yaml", "samples.txt"} <= {a.path for a in client.list_artifacts(r.info.run_id)}

    # an interrupted sweep: one finished run is gone; running again redoes only what is missing
    lost = next(r for r in first if r.data.tags["model"] == "gru" and r.data.tags["seed"] == "1")
    client.delete_run(lost.info.run_id)
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("skipped: FINISHED run") == 3
    _, second = runs(tmp_path)
    new = {r.info.run_id for r in second} - {r.info.run_id for r in first}
    new_runs = [r for r in second if r.info.run_id in new]
    assert sorted((r.data.tags["model"], r.info.status) for r in new_runs) == \
        [("gru", "FINISHED"), ("lstm", "FAILED"), ("lstm", "FAILED")]

    p = seqbench("seqbench.report", str(study), root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    md = (tmp_path / "reports" / "smoke" / "report.md").read_text()
    assert "## lm / synthetic" in md and "Protocol: task **lm**, data **synthetic**" in md
    lines = md.split("## lm / synthetic")[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = lines[first + 2:lines.index("", first)]  # the results table, not the pairwise ones below it
    rows = {line.split("|")[1].strip().removeprefix("★ "): line for line in table}
    assert set(rows) == {"rnn", "gru", "lstm"}
    assert "(n=2)" in rows["rnn"] and "2/2" in rows["rnn"] and "(n=2)" in rows["gru"]
    assert "0/2" in rows["lstm"]
    # 2 seeds a row after 2 epochs: Welch (one pair, so Holm = raw p) cannot separate rnn and gru (p ≈ 0.4,
    # the 95 % CI of their difference spans ± 0.8 bits/char): no ★, and the verdict says why
    verdict = next(line for line in lines if line.startswith("**Verdict.**"))
    assert not any("★" in line for line in table)
    assert verdict.count("No winner: ") == 1 and "are indistinguishable (Holm-adjusted p ≥ 0.05" in verdict
    assert "No winner: rnn and gru" in verdict or "No winner: gru and rnn" in verdict
    assert "rnn and gru: n = 2 < 3 seeds" in verdict and "lstm: 2 of 2 runs failed or missing" in verdict
    assert "trained for a fixed budget; convergence not checked" in verdict
    failed = [line for line in md.splitlines() if "| FAILED |" in line]
    assert len(failed) == 2 and all("training diverged" in line for line in failed)
    html = (tmp_path / "reports" / "smoke" / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html and "<strong>lm</strong>" in html and "**" not in html
    client, parent2 = parent_run(tmp_path)  # the resumed sweep reused the parent; the report is logged on it
    assert parent2.info.run_id == parent.info.run_id
    assert {"report/report.md", "report/report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

    # the decoding study: every strategy on the finished LM runs of the study, no retraining
    decoding = tmp_path / "dec.yaml"
    decoding.write_text(yaml.safe_dump({"name": "dec", "kind": "decoding", "source_study": "smoke",
                                        "common": ["num_samples=2", "max_new_tokens=12", "strategies=[greedy,beam]"]}))
    p = seqbench("seqbench.sweep", str(decoding), root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    client, all_runs = runs(tmp_path)
    _, decode = runs(tmp_path, "dec")
    parent_run(tmp_path, "dec")
    finished_lm = {r.info.run_id for r in all_runs if r.data.tags["task"] == "lm" and r.info.status == "FINISHED"}
    assert len(finished_lm) == 4
    assert {r.data.tags["source_run_id"] for r in decode} == finished_lm  # each trained model decoded once
    assert all("greedy/nll_per_char" in r.data.metrics and "beam/distinct_2" in r.data.metrics for r in decode)
    p = seqbench("seqbench.sweep", str(decoding), root=tmp_path)  # resumable: nothing left to decode
    assert p.stdout.count("already decoded") == 4
    p = seqbench("seqbench.report", str(decoding), root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    md = (tmp_path / "reports" / "dec" / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert set(rows) == {"strategy", "beam", "greedy"} and "(n=4)" in rows["beam"]
    assert "quality_diversity_synthetic.png" in md


def test_submitit_local_sweep_runs_and_tracks_every_job(tmp_path):
    """The SLURM code path (Hydra's submitit launcher, one submitit job per sweep point) with
    submitit's local executor: both jobs FINISHED, tracked and nested under the study's parent."""
    study = tmp_path / "subm.yaml"
    study.write_text(yaml.safe_dump({"name": "subm", "seeds": [0], "common": TINY_COMMON,
                                     "grids": [{"name": "cells", "overrides": ["model=rnn,gru"]}]}))
    p = seqbench("seqbench.sweep", str(study), "--launcher", "submitit_local", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "== subm: 2/2 configurations FINISHED, 0 failed, 0 missing" in p.stdout
    client, parent = parent_run(tmp_path, "subm")
    _, jobs = runs(tmp_path, "subm")
    assert sorted((r.data.tags["model"], r.info.status) for r in jobs) == [("gru", "FINISHED"), ("rnn", "FINISHED")]
    assert all(len(client.get_metric_history(r.info.run_id, "val/loss")) == 2 for r in jobs)
    assert parent.info.status == "FINISHED"
    assert list((tmp_path / "outputs" / "multirun").glob("*/*/.submitit/*/*_result.pkl"))  # ran through submitit


@pytest.mark.parametrize("bad, message", [
    (["data=timemachine", "data.path=/nowhere/tm.txt"], "corpus file not found: /nowhere/tm.txt"),
    (["model.hidden_size=0"], "model.hidden_size=0 must be >= 1"),
    (["model.hiden_size=8"], "grid 'bad': unknown key 'model.hiden_size'; closest valid keys: model.hidden_size"),
    (["model=rnn,lsmt"], "unknown model 'lsmt'; valid choices: bigru, bilstm, birnn, boe, cifg, gru, "),
    # every job composes, but Hydra's base config (swept groups at their defaults: char) does not
    (["tokenizer=bpe,word", "tokenizer.vocab_size=100"],
     "grid 'bad': Could not override 'tokenizer.vocab_size'. in the base config Hydra composes"),
])
def test_sweep_rejects_bad_grid_before_any_job(tmp_path, bad, message):
    """Every configuration is validated and every dataset loaded once before jobs fan out: one
    error line, exit 2, and no MLflow store or run is created."""
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump({"name": "bad", "seeds": [0, 1], "common": ["trainer.max_epochs=1"],
                                     "grids": [{"name": "good", "overrides": ["model=gru"]},
                                               {"name": "bad", "overrides": bad}]}))
    p = seqbench("seqbench.sweep", str(study), root=tmp_path)
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("seqbench.sweep: error: ") and message in errors[0], p.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


def test_runs_left_running_after_an_interrupted_multirun_are_closed_killed(tmp_path):
    """A loky worker shut down while its job handles the SIGINT can leave that job RUNNING; once the
    multirun has exited the sweep closes the parent's children started since it began and still
    RUNNING as KILLED, with the reason. Finished children, other parents' runs and runs from before
    this multirun are left alone."""
    from seqbench.study import study_tracker
    from seqbench.sweep import close_orphans

    tracker = study_tracker(str(tmp_path), "orphans")
    parent = tracker.study_run("orphans")
    client, exp = tracker.client, tracker.experiment_id
    child = lambda **tags: client.create_run(exp, tags={"mlflow.parentRunId": parent, **tags}).info.run_id
    old = child()
    time.sleep(0.05)
    since = int(time.time() * 1000)
    time.sleep(0.05)
    orphan, finished = child(), child()
    client.set_terminated(finished, "FINISHED")
    stranger = client.create_run(exp).info.run_id
    assert close_orphans(tracker, parent, since, signal.SIGINT) == [orphan]
    status = {r: client.get_run(r).info.status for r in (old, orphan, finished, stranger)}
    assert status == {old: "RUNNING", orphan: "KILLED", finished: "FINISHED", stranger: "RUNNING"}
    assert client.get_run(orphan).data.tags["failure_reason"].startswith("terminated by signal 2 (SIGINT): the job's worker")


def test_interrupted_sweep_records_killed_runs_and_stops(tmp_path):
    """Ctrl-C (SIGINT to the process group) during a sweep: the jobs in flight (the first
    multirun's two, on 2 jobs) end KILLED with the signal as reason, the rest of their
    grids and the next grids are not started, and the sweep exits 128 + SIGINT."""
    from test_run import running_runs, wait_for

    study = tmp_path / "long.yaml"
    study.write_text(yaml.safe_dump({"name": "long", "seeds": [0], "common": [*(o for o in TINY_COMMON if not o.startswith("trainer.max_epochs")),
                                                                       "trainer.max_epochs=500"],
                                     "grids": [{"name": "slow", "overrides": ["model=rnn,gru"]},
                                               {"name": "slow too", "overrides": ["model=lstm"]},
                                               *({"name": f"never started {k}", "overrides": ["model=cifg", f"optimizer.lr=0.00{k + 1}"]}
                                                 for k in range(3))]}))
    env = {**os.environ, "SEQBENCH_ROOT": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "seqbench.sweep", str(study), "--jobs", "2"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: running_runs(tmp_path / "mlflow.db") == 3)  # the study's parent and two jobs
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "stopped by signal 2" in err and "== long: compare: 5 multiruns, one at a time" in out
    _, killed = runs(tmp_path, "long")
    assert parent_run(tmp_path, "long")[1].info.status == "KILLED"
    assert sorted(r.data.tags["model"] for r in killed) == ["gru", "rnn"]  # no lstm, no cifg: never started
    for r in killed:
        assert r.info.status == "KILLED"
        assert "terminated by signal 2 (SIGINT)" in r.data.tags["failure_reason"]


@pytest.mark.parametrize("name", [s for s in studies() if load_study(s).get("kind") != "decoding"])
def test_every_shipped_study_composes_and_validates(name, tmp_path):
    """What the sweep's preflight checks before any job, for every study in pipelines/ (first and
    last point of each grid, to keep it quick): the grid's base config and its jobs compose and
    validate (datasets are not loaded here)."""
    study = load_study(name)
    seeds = ",".join(map(str, study.get("seeds", [0])))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for grid in study["grids"]:
            sweep = [*grid["overrides"], f"seed={seeds}", *study.get("common", [])]
            check_base(grid, sweep, str(tmp_path))
            points = expand(sweep)
            for point in (points[0], points[-1]):
                cfg = compose("config", overrides=[f"paths.root={tmp_path}", *point])
                if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():  # a GPU study, here
                    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
                        validate(cfg)
                else:
                    validate(cfg)
