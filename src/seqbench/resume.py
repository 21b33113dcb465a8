"""Resuming a finished study in seconds: when the study ran to the end with every configuration
FINISHED, its parent run records what those configurations were made from (a fingerprint) and
their config hashes. A later ``make sweep`` with the same fingerprint checks that each of those
hashes still has a FINISHED run of this code in MLflow (one search) and stops there, without
composing any configuration again: the same safety as the full check (same config hash, same
``code_version``), since the configurations are a function of what the fingerprint holds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

#: the parent run's tag holding :func:`fingerprint`, and its artifact with the config hashes
FINGERPRINT_TAG = "seqbench.study_fingerprint"
CONFIGURATIONS = "configurations.json"


@functools.cache
def conf_environment() -> tuple[str, ...]:
    """The environment variables the configs read (``${oc.env:NAME,...}`` in ``conf/``)."""
    from seqbench.validate import CONF_DIR

    text = "".join(p.read_text() for p in sorted(Path(CONF_DIR).rglob("*.yaml")))
    return tuple(sorted(set(re.findall(r"oc\.env:(\w+)", text))))


def fingerprint(study: dict, launcher: str, jobs: int | None, overrides: list[str], root: str) -> str:
    """A 16-hex-digit hash of everything a study's composed configurations depend on: the study
    file, the code and configs (``code_version``), the command line, the project root, the core
    count (threads per job) and the environment variables the configs read."""
    from seqbench.tracking import code_version

    blob = json.dumps({"study": study, "code_version": code_version(), "launcher": launcher, "jobs": jobs,
                       "overrides": list(overrides), "root": root, "cores": os.cpu_count(),
                       "environment": {name: os.environ.get(name) for name in conf_environment()}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def record_finished(tracker, parent: str, fingerprint_: str, hashes: list[str]) -> None:
    """On a study whose every configuration FINISHED: its fingerprint and config hashes."""
    tracker.client.log_text(parent, json.dumps(sorted(set(hashes))), CONFIGURATIONS)
    tracker.client.set_tag(parent, FINGERPRINT_TAG, fingerprint_)


@contextlib.contextmanager
def quiet_downloads():
    """MLflow's artifact download without its progress bar (one small file)."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def finished_before(root: str, study: str, fingerprint_: str, overrides: list[str] = ()) -> tuple[str, int] | None:
    """(parent run id, number of configurations) when the study's FINISHED parent run carries this
    fingerprint and each of its configurations still has a FINISHED run made by this code; else None
    (the sweep then checks every configuration). Reads only: creates no store, experiment or run
    (``overrides``: the command line's ``logger.*`` and ``paths.*``)."""
    from hydra import compose, initialize_config_dir
    from mlflow import MlflowClient

    from seqbench.tracking import STUDY_RUN_TAG, code_version, experiment_name
    from seqbench.validate import CONF_DIR

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.root={root}", *overrides, f"study={study}"])
    except Exception:  # noqa: BLE001 (a bad logger override: the sweep's checks report it in one line)
        return None
    uri = str(cfg.logger.get("tracking_uri", ""))
    if cfg.logger.name != "mlflow" or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()):
        return None
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(cfg))
    if experiment is None:
        return None
    parents = client.search_runs(
        [experiment.experiment_id], max_results=1,
        filter_string=(f"tags.`{STUDY_RUN_TAG}` = '{study}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint_}' "
                       f"and attributes.status = 'FINISHED'"))
    if not parents:
        return None
    parent = parents[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
        try:
            hashes = json.loads(Path(client.download_artifacts(parent, CONFIGURATIONS, tmp)).read_text())
        except Exception:  # noqa: BLE001 (artifact gone or unreadable: check every configuration instead)
            return None
    finished, token = set(), None
    while True:  # this code's FINISHED runs, 1,000 a page
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token,
                                  filter_string=f"attributes.status = 'FINISHED' and tags.code_version = '{code_version()}'")
        finished |= {r.data.tags.get("config_hash") for r in page}
        token = page.token
        if not token:
            break
    return (parent, len(hashes)) if hashes and set(hashes) <= finished else None
