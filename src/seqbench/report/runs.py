"""The study's runs, read back from MLflow, and the expected configurations without a FINISHED
run (failed with their reason, running, or missing): listed, never silently dropped."""

from __future__ import annotations

import pandas as pd

from seqbench.study import Expected
from seqbench.tracking import Tracker, run_name


def fetch_runs(tracker: Tracker, hashes: list[str], study: str) -> pd.DataFrame:
    """Runs tagged with the study, or carrying any expected config hash (``mlflow.search_runs``;
    MLflow's filter language has no IN for tags, so the hash match is done here)."""
    import mlflow

    df = mlflow.search_runs([tracker.experiment_id], filter_string="tags.task != 'study'")  # not the parent
    if not len(df):
        return pd.DataFrame(columns=["run_id", "status", "tags.config_hash", "tags.study"])
    for col in ("tags.study", "tags.config_hash"):
        if col not in df:
            df[col] = None
    return df[(df["tags.study"] == study) | df["tags.config_hash"].isin(set(hashes))]


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "FINISHED"] if len(runs) else runs


def problems(expected: list[Expected], runs: pd.DataFrame) -> list[list[str]]:
    """Expected configurations without a FINISHED run: failed (with reason), running, or missing."""
    out = []
    for e in expected:
        mine = runs[runs["tags.config_hash"] == e.hash] if len(runs) else runs
        if len(mine) and (mine["status"] == "FINISHED").any():
            continue
        if len(mine):
            r = mine.iloc[0]
            reason = r.get("tags.failure_reason") if isinstance(r.get("tags.failure_reason"), str) else ""
            out.append([run_name(e.cfg), r["status"], r["run_id"], reason])
        else:
            out.append([run_name(e.cfg), "MISSING", "–", "no run with config_hash " + e.hash])
    return out
