"""Scale-out against the real thing: a single-node SLURM (munge, slurmctld, slurmd) and an
``mlflow server`` on PostgreSQL, started on this machine by ``scripts/cluster up``.

What SLURM did is read from SLURM itself (its job-completion log and ``squeue``; the test cluster
runs no accounting daemon, see ``scripts/cluster``), and what was recorded from the tracking
server's REST API. Where the cluster cannot be started (not root, or Debian's slurm-wlm, munge or
postgresql missing and not installable), every test here is skipped with one line saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT

pytestmark = pytest.mark.slow

CLUSTER = PROJECT / "scripts" / "cluster"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian's slurm-wlm and munge; .ci/run installs them)"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        return "PostgreSQL server not installed (Debian's postgresql; .ci/run installs it)"
    return None


@pytest.fixture(scope="module")
def cluster():
    """``scripts/cluster up`` in a fresh state folder; yields the environment its clients need."""
    if (why := missing()) is not None:
        pytest.skip(f"no test cluster: {why}")
    state = Path(tempfile.mkdtemp(prefix="seqbench-cluster-"))
    state.chmod(0o755)  # the postgres user must reach its data folder inside
    env = {**os.environ, "SEQBENCH_CLUSTER_DIR": str(state / "c"), "MLFLOW": str(Path(sys.executable).parent / "mlflow")}
    up = subprocess.run([str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        subprocess.run([str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"scripts/cluster up failed: {up.stderr[-2000:]}")
    for line in up.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    yield env
    subprocess.run([str(CLUSTER), "down"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(state, ignore_errors=True)


def rest(env: dict, endpoint: str, body: dict) -> dict:
    """The tracking server's REST API (``/api/2.0/mlflow/...``): GET with the body as query for the
    get endpoints, POST with a JSON body otherwise."""
    url = f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{endpoint}"
    if "/get" in endpoint:
        request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(body)}")
    else:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def study_runs(env: dict, study: str) -> list[dict]:
    exp = rest(env, "experiments/get-by-name", {"experiment_name": f"seqbench/{study}"})["experiment"]
    found = rest(env, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})
    return found.get("runs", [])


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def completed_jobs(env: dict) -> list[dict]:
    """SLURM's job-completion log (jobcomp/filetxt): one ``Key=Value`` line per finished job."""
    path = Path(env["SEQBENCH_CLUSTER_DIR"]) / "jobcomp.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in lines]


TINY_STUDY = {
    "name": "slurm_tiny",
    "description": "rnn and gru on copy memory, lr tuned, on a real SLURM queue",
    "seeds": [0, 1],
    "tuning": {"seed": 100},
    "common": ["trainer.enable_progress_bar=false", "trainer.max_epochs=1"],
    "grids": [{"name": "copy", "overrides": ["task=copy", "data=copy", "data.delay=5", "data.copy_length=3",
                                             "model=rnn,gru", "model.hidden_size=16", "embedding.dim=8",
                                             "data.num_train=128", "data.num_val=32", "data.num_test=32",
                                             "task.probe=false"],
               "tune": {"optimizer.lr": [0.003, 0.01]}}],
}


def test_a_tuned_study_runs_on_slurm_and_is_tracked_in_postgresql(cluster, tmp_path):
    """Tuning jobs -> choice -> comparison jobs -> parent FINISHED, in one command, every job a
    SLURM job, every run in the PostgreSQL-backed server; then the report reads that server."""
    path = tmp_path / "slurm_tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_STUDY))
    env = {**cluster, "SEQBENCH_ROOT": str(tmp_path)}
    before = len(completed_jobs(env))
    sweep = subprocess.run([sys.executable, "-m", "seqbench.sweep", str(path), "--launcher", "slurm",
                            "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-3000:]
    runs = study_runs(env, "slurm_tiny")
    parent = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    children = [r for r in runs if "mlflow.parentRunId" in tags(r)]
    assert len(parent) == 1 and parent[0]["info"]["status"] == "FINISHED"
    stage = lambda r: {p["key"]: p["value"] for p in r["data"]["params"]}["stage"]
    assert sorted(stage(r) for r in children) == ["compare"] * 4 + ["tune"] * 4
    assert all(r["info"]["status"] == "FINISHED" for r in children)
    assert all(tags(r)["mlflow.parentRunId"] == parent[0]["info"]["run_id"] for r in children)
    # SLURM ran them: 8 jobs completed, none left in the queue
    jobs = completed_jobs(env)[before:]
    assert len(jobs) == 8 and all(j.get("JobState") == "COMPLETED" for j in jobs), jobs
    queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
    assert queue.returncode == 0 and queue.stdout.strip() == ""
    report = subprocess.run([sys.executable, "-m", "seqbench.report", str(path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "## copy / copy" in (tmp_path / "reports" / "slurm_tiny" / "report.md").read_text()


def test_a_misspelt_launcher_setting_is_one_line_before_any_job(cluster, tmp_path):
    path = tmp_path / "slurm_typo.yaml"
    path.write_text(yaml.safe_dump({**TINY_STUDY, "name": "slurm_typo"}))
    env = {**cluster, "SEQBENCH_ROOT": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "seqbench.sweep", str(path), "--launcher", "slurm",
                        "hydra.launcher.partitio=debug"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("seqbench.sweep: error: unknown slurm launcher setting 'hydra.launcher.partitio'; "
                               "valid: ") and "hydra.launcher.partition" in lines[0]
    with pytest.raises(urllib.error.HTTPError):  # no experiment, so no parent run
        rest(env, "experiments/get-by-name", {"experiment_name": "seqbench/slurm_typo"})


TINY_LM = ["data.num_train=200", "data.num_val=40", "data.num_test=40", "model.hidden_size=16", "embedding.dim=8",
           "task.batch_size=4", "task.eval_batch_size=4", "task.bptt=16", "task.generate.num_samples=1",
           "task.generate.max_new_tokens=10", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
           "num_threads=1", "task.probe=false"]


def experiment_runs(env: dict, name: str) -> list[dict]:
    exp = rest(env, "experiments/get-by-name", {"experiment_name": name})["experiment"]
    return rest(env, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}).get("runs", [])


def metric_steps(env: dict, run_id: str, key: str) -> list[int]:
    history = rest(env, "metrics/get-history", {"run_id": run_id, "metric_key": key})
    return sorted(m["step"] for m in history.get("metrics", []))


def test_ddp_under_slurm_is_one_run_on_rank_zero(cluster, tmp_path):
    """``trainer=ddp_cpu`` as 2 SLURM tasks (sbatch + srun): Lightning takes the ranks from SLURM,
    rank 0 alone creates the MLflow run, and the test stream is split over both ranks."""
    env = {**cluster, "SEQBENCH_ROOT": str(tmp_path), "MLFLOW_EXPERIMENT_NAME": "ddp-slurm"}
    script = tmp_path / "ddp.sh"
    script.write_text("#!/bin/bash\n" + " ".join(["srun", sys.executable, "-m", "seqbench", "trainer=ddp_cpu", *TINY_LM]) + "\n")
    submit = subprocess.run(["sbatch", "--parsable", "--wait", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                             "--mem=2G", "--time=10", f"--output={tmp_path}/ddp-%j.out", str(script)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = "".join(p.read_text() for p in tmp_path.glob("ddp-*.out"))
    assert submit.returncode == 0, submit.stderr + out[-3000:]
    job = submit.stdout.strip().split(";")[0]
    [done] = [j for j in completed_jobs(env) if j.get("JobId") == job]
    assert done["JobState"] == "COMPLETED" and done.get("ProcCnt") == "2", done
    [run] = experiment_runs(env, "ddp-slurm")
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["trainer.devices"] == "2" and params["trainer.strategy"] == "ddp"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    from seqbench.data.synthetic import AgreementCorpus

    test = AgreementCorpus(seed=0, num_train=200, num_val=40, num_test=40)()["test"]["text"]
    columns = 2 * 4                                   # 2 ranks x task.eval_batch_size columns
    assert metrics["test/tokens"] == columns * ((len("\n".join(test)) - 1) // columns)
    assert out.count("MLflow run id:") == 1           # the summary, printed by rank 0 only


def test_eight_writers_at_once_into_postgresql(cluster, tmp_path):
    """8 runs started together, all writing to the PostgreSQL-backed server: every one FINISHED
    with every metric step (what sqlite does under the same load: README, Scale out)."""
    env = {**cluster, "SEQBENCH_ROOT": str(tmp_path), "MLFLOW_EXPERIMENT_NAME": "writers"}
    procs = [subprocess.Popen([sys.executable, "-m", "seqbench", *TINY_LM, f"seed={i}", "trainer.log_every_n_steps=1"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(8)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e[-1500:] for e in errors]
    runs = experiment_runs(env, "writers")
    assert len(runs) == 8 and {r["info"]["status"] for r in runs} == {"FINISHED"}
    assert sorted(int({t["key"]: t["value"] for t in r["data"]["tags"]}["seed"]) for r in runs) == list(range(8))
    steps = [metric_steps(env, r["info"]["run_id"], "train/loss_step") for r in runs]
    # logged every step: consecutive, none lost to a lock and none written twice (the seeds generate
    # corpora of different lengths, so the runs' step counts differ)
    assert all(s and s[0] in (0, 1) and s == list(range(s[0], s[0] + len(s))) for s in steps), steps
    assert all({"test/loss", "val/loss", "primary"} <= {m["key"] for m in r["data"]["metrics"]} for r in runs)
