"""DDP on CPU (2 processes, gloo): trains on disjoint streams and produces exactly one MLflow run."""

from __future__ import annotations

import math

from mlflow import MlflowClient

from conftest import TINY, cli
from seqbench.data.synthetic import AgreementCorpus


def test_ddp_cpu_two_processes_one_run(tmp_path):
    p = cli("trainer=ddp_cpu", *TINY, root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "It is recommended to use" not in p.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("seqbench")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # rank 1 never created a run
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.data.params["trainer.devices"] == "2" and r.data.params["trainer.strategy"] == "ddp"
    assert math.isfinite(r.data.metrics["test/bits_per_char"])
    assert r.info.run_id in p.stdout  # the summary printed once, by rank 0
    assert p.stdout.count("MLflow run id:") == 1
    # the evaluated tokens are summed over both ranks: 2 ranks x 4 columns of the test stream
    test = AgreementCorpus(seed=0, num_train=400, num_val=60, num_test=60)()["test"]["text"]
    n = len("\n".join(test))  # char tokenizer: one token per character
    columns = 2 * 4
    assert r.data.metrics["test/tokens"] == columns * ((n - 1) // columns)
