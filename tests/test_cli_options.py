"""Every option of every config group, and every mandatory key, started the way a user starts it:
``python -m seqbench ...`` in a subprocess, on a tiny budget.

What to run is derived from ``conf/`` and the code, never listed here: the groups are the folders
of ``conf/``, their options the YAML files. Each option runs in the first *task context* (a task
and the generated dataset that serves it) whose composed config passes :func:`validate`; the
options sharing a context run as one Hydra multirun (``-m group=a,b,c``), and each job must print
its summary and leave a FINISHED MLflow run. An option that passes in no context must need
something this machine lacks (a GPU, a corpus file, a value the user supplies): it is started
alone and must fail with one ``seqbench: error:`` line, exit 2 and no MLflow run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from conftest import cli, compose_cfg
from seqbench.errors import ConfigError
from seqbench.validate import CONF_DIR, datasets_for, group_options, validate

pytestmark = pytest.mark.slow

#: a few optimizer steps of any task: enough to reach validation, test, generation and tracking
BUDGET = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
          "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "num_threads=1"]
#: what only this machine lacks may make an option fail; these are the words that say so
ABSENT_HERE = ("needs a CUDA GPU", "SEQBENCH_DATA_DIR")
#: a value for each mandatory (``???``) key: the user supplies it, so the test must
MANDATORY_VALUES = {"embedding.path": lambda tmp: write_vectors(tmp / "vectors.txt")}

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
TASKS = group_options("task")


def write_vectors(path: Path) -> Path:
    """A GloVe-format text file covering a few characters of the synthetic corpus."""
    path.write_text("".join(f"{c} {0.1 * i:.1f} {-0.1 * i:.1f} 0.5\n" for i, c in enumerate("aeiou")))
    return path


def generated(data: str) -> bool:
    """A dataset the project generates (no file to read)."""
    return "path" not in OmegaConf.load(CONF_DIR / "data" / f"{data}.yaml")


def available(data: str) -> bool:
    return generated(data) or Path(compose_cfg([f"data={data}"]).data.path).exists()


def context(task: str) -> list[str]:
    """``task=<task>`` on the first generated dataset serving it, with the tiny budget."""
    data = next(d for d in datasets_for(task) if generated(d))
    return [f"task={task}", f"data={data}", *BUDGET]


CONTEXTS = [context(t) for t in ["lm", *[t for t in TASKS if t != "lm"]]]  # the default task first


def first_context(*overrides: str) -> list[str] | None:
    """The first task context in which ``overrides`` compose and validate, else None."""
    for ctx in CONTEXTS:
        try:
            validate(compose_cfg([*ctx, *overrides]))
            return ctx
        except (ConfigError, FileNotFoundError):
            continue
    return None


def plan() -> tuple[list[tuple[str, tuple[str, ...], list[str]]], list[tuple[str, str]]]:
    """(multiruns: (group, context, options)), (options that run nowhere here: (group, option))."""
    runs, absent = {}, []
    for group in GROUPS:
        if group in ("task", "data"):  # each task runs over every dataset it reads
            continue
        for option in group_options(group):
            if has_mandatory_key(group, option):
                continue  # tests below: without its value, and with it
            ctx = first_context(f"{group}={option}")
            if ctx is None:
                absent.append((group, option))
            else:
                runs.setdefault((group, tuple(ctx)), []).append(option)
    return [(g, c, o) for (g, c), o in runs.items()], absent


def has_mandatory_key(group: str, option: str) -> bool:
    return bool(mandatory_keys(group, option))


def mandatory_keys(group: str, option: str) -> list[str]:
    node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    return [f"{group}.{k}" for k in node if OmegaConf.is_missing(node, k)]


MULTIRUNS, ABSENT = plan()
MANDATORY = [(g, o, k) for g in GROUPS for o in group_options(g) for k in mandatory_keys(g, o)]


def finished_runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.data.tags.get("failure_reason"))
                                                             for r in runs if r.info.status != "FINISHED"]
    return runs


def assert_one_line_and_no_run(p, root: Path) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("seqbench: error: "), p.stderr[-3000:]
    assert not (root / "mlflow.db").exists() or finished_runs(root) == []  # no run at all
    return lines[0]


def multirun(tmp_path: Path, *args: str, jobs: int):
    """``python -m seqbench -m <args>``: every one of its ``jobs`` must end with its summary."""
    p = cli("-m", *args, root=tmp_path, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "seqbench: job failed" not in p.stderr and "seqbench: error" not in p.stderr, p.stderr[-3000:]
    assert p.stdout.count("outputs: ") == jobs, p.stdout[-3000:]
    return p


@pytest.mark.parametrize("task", TASKS)
def test_each_task_runs_on_every_dataset_it_reads(tmp_path, task):
    """``task=<t> data=<every available dataset serving t>``: one FINISHED run per dataset."""
    data = [d for d in datasets_for(task) if available(d)]
    ctx = [a for a in context(task) if not a.startswith("data=")]
    multirun(tmp_path, *ctx, f"data={','.join(data)}", jobs=len(data))
    runs = finished_runs(tmp_path)
    assert sorted(r.data.tags["data"] for r in runs) == sorted(data)
    assert {r.data.tags["task"] for r in runs} == {task}


@pytest.mark.parametrize("data", [d for d in group_options("data") if not available(d)])
def test_a_dataset_missing_here_fails_in_one_line(tmp_path, data):
    task = next(t for t in TASKS if data in datasets_for(t))
    line = assert_one_line_and_no_run(cli(f"task={task}", f"data={data}", *BUDGET, root=tmp_path), tmp_path)
    assert "SEQBENCH_DATA_DIR" in line and data in line


@pytest.mark.parametrize("group, ctx, options", MULTIRUNS,
                         ids=[f"{g}-{c[0].split('=')[1]}" for g, c, _ in MULTIRUNS])
def test_every_option_of_a_group_runs(tmp_path, group, ctx, options):
    """The options sharing a context run as one multirun; trainer options each alone (a DDP job
    starts its other ranks by running the command line again, which must not be a multirun)."""
    if group == "trainer":
        for option in options:
            root = tmp_path / option
            root.mkdir()
            p = cli(*ctx, f"trainer={option}", root=root, timeout=900)
            assert p.returncode == 0, p.stderr[-3000:]
            assert len(finished_runs(root)) == 1
        return
    multirun(tmp_path, *ctx, f"{group}={','.join(options)}", jobs=len(options))
    runs = finished_runs(tmp_path)
    tracked = [o for o in options if not (group == "logger" and o == "none")]
    assert len(runs) == len(tracked)
    if all(f"{group}.name" in r.data.params for r in runs):  # paths has no name
        assert sorted(r.data.params[f"{group}.name"] for r in runs) == sorted(tracked)


@pytest.mark.parametrize("group, option", ABSENT, ids=[f"{g}={o}" for g, o in ABSENT])
def test_an_option_that_needs_what_is_missing_here_fails_in_one_line(tmp_path, group, option):
    line = assert_one_line_and_no_run(cli(*CONTEXTS[0], f"{group}={option}", root=tmp_path), tmp_path)
    assert any(reason in line for reason in ABSENT_HERE), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: trainer=gpu runs here")
def test_gpu_trainers_without_a_gpu_name_the_cpu_alternatives(tmp_path):
    assert ("trainer", "gpu") in ABSENT and ("trainer", "ddp") in ABSENT
    line = assert_one_line_and_no_run(cli("trainer=gpu", root=tmp_path), tmp_path)
    assert line.endswith("use trainer=cpu, or trainer=ddp_cpu for DDP on CPU"), line


@pytest.mark.parametrize("group, option, key", MANDATORY, ids=[k for _, _, k in MANDATORY])
def test_a_mandatory_key_is_accepted_on_the_command_line(tmp_path, group, option, key):
    """``embedding=pretrained embedding.path=/file``: the documented way in. Without the value,
    one line naming the key and no run."""
    assert key in MANDATORY_VALUES, f"{key} is mandatory: give the test a value for it in MANDATORY_VALUES"
    missing = tmp_path / "missing"
    missing.mkdir()
    line = assert_one_line_and_no_run(cli(*CONTEXTS[0], f"{group}={option}", root=missing), missing)
    assert key in line, line
    value = f"{key}={MANDATORY_VALUES[key](tmp_path)}"
    ctx = first_context(f"{group}={option}", value)
    assert ctx is not None, f"{group}={option} {value} validates in no task context"
    p = cli(*ctx, f"{group}={option}", value, root=tmp_path, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    [run] = finished_runs(tmp_path)
    assert run.data.params[key] == value.split("=", 1)[1]


def test_early_stopping_under_a_step_budget_that_ends_before_validation(tmp_path):
    """A step budget shorter than an epoch: no validation ever runs, so early stopping has nothing
    to watch; the run finishes, recorded as not converged."""
    p = cli("model=gru", "early_stopping.patience=1", "++trainer.max_steps=5", "data.num_train=400",
            "trainer.enable_progress_bar=false", "task.generate.max_new_tokens=20", root=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    [run] = finished_runs(tmp_path)
    assert run.data.metrics["converged"] == 0.0
    assert "val/loss" not in run.data.metrics and "test/loss" in run.data.metrics


def test_the_plan_covers_every_option():
    """Every option of every group is in a multirun, a one-line failure test or a mandatory-key test."""
    covered = {(g, o) for g, _, opts in MULTIRUNS for o in opts} | set(ABSENT) | {(g, o) for g, o, _ in MANDATORY}
    covered |= {("task", t) for t in TASKS} | {("data", d) for d in group_options("data")}
    assert covered == {(g, o) for g in GROUPS for o in group_options(g)}
    assert os.environ.get("SEQBENCH_DATA_DIR")  # the real corpora are read from there
