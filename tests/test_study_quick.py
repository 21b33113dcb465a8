"""The quick twin of the default study, end to end as a user runs it: ``python -m seqbench.sweep
cells_quick`` (tuning -> choice -> comparison, every job a tracked run) then ``python -m
seqbench.report cells_quick``: a report that says first that it is a smoke run, then the answer,
the tables with their convergence and Pareto columns, the frontier plots, the published findings
and the tuning choices."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import needs_data
from seqbench.report.findings import load_findings
from seqbench.study import load_study

pytestmark = [pytest.mark.slow, needs_data("sst", "train.txt"), needs_data("timemachine", "timemachine.txt")]


def command(module: str, *args: str, root) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEQBENCH_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)


def test_cells_quick_sweeps_and_reports_end_to_end(tmp_path):
    study = load_study("cells_quick")
    sweep = command("seqbench.sweep", "cells_quick", root=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench/cells_quick")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    # every tuning candidate and every compared seed is one FINISHED child run with its time to best
    stages = {r.data.params["stage"] for r in children}
    assert stages == {"tune", "compare"} and all(r.info.status == "FINISHED" for r in children)
    assert all(0 < r.data.metrics["time_to_best_s"] <= r.data.metrics["wall_time_s"] for r in children)

    report = command("seqbench.report", "cells_quick", root=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "reports" / "cells_quick"
    md = (out / "report.md").read_text()
    assert md.index("Smoke run, not a result") < md.index("## The answer") < md.index("## copy / copy")
    tables = [line for line in md.splitlines() if line.startswith("- **")]
    assert [t.split("**")[1] for t in tables] == ["copy / copy", "lm / timemachine", "classify / sst2"]
    assert all("at this budget" in t for t in tables)  # two epochs: nothing converged, and it says so
    assert "★" not in md.split("## Published findings")[0].replace("★ marks a row only", "")
    assert md.count("| converged |") == 3 and md.count("| Pareto front |") == 3
    assert len(list(out.glob("frontier_*.png"))) == 3
    findings = md.split("## Published findings")[1].split("## Tuning")[0]
    assert len([line for line in findings.splitlines() if line.startswith("| ") and "citation" not in line
                and not line.startswith("|---")]) >= len(load_findings(study))
    assert "## Tuning" in md and "Tuning budget: 2 candidates for every point over optimizer.lr." in md
