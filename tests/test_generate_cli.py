"""The generate and compare_decoding entry points on a tiny trained run (in-process + one CLI call)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from conftest import TINY, compose_cfg
from seqbench.errors import ConfigError
from seqbench.validate import CONF_DIR, group_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny tracked run: (project root, run id)."""
    from seqbench.run import run

    root = tmp_path_factory.mktemp("gen")
    result = run(compose_cfg([*TINY, "trainer.max_epochs=2"], root=root))
    return root, result["run_id"]


def entry_cfg(name: str, root, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=[f"paths.root={root}", *overrides])


def test_generate_from_run_id_in_process(trained, capsys):
    from seqbench.generate import generate

    root, run_id = trained
    texts = generate(entry_cfg("generate", root, f"run_id={run_id}", "decoding=beam",
                               "decoding.beam_width=3", "prompt=the dog", "max_new_tokens=20",
                               "num_samples=2"))
    assert len(texts) == 2 and all(t.startswith("the dog") and len(t) == len("the dog") + 20 for t in texts)
    assert texts[0] == texts[1]  # beam search is deterministic: same prompt, same hypothesis
    out = capsys.readouterr().out
    assert out.startswith(f"# decoding=beam prompt='the dog' seed=0 run_id={run_id}") and texts[0] in out


def test_generate_from_files_matches_run_id(trained, tmp_path):
    """Both ways of naming the model load the same weights: same seed, same samples."""
    from seqbench.generate import generate

    root, run_id = trained
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    ckpt = client.download_artifacts(run_id, "checkpoints/best.ckpt", str(tmp_path))
    tok = client.download_artifacts(run_id, "tokenizer.json", str(tmp_path))
    common = ["decoding=topp", "decoding.p=0.9", "num_samples=3", "max_new_tokens=30", "seed=4"]
    by_run = generate(entry_cfg("generate", root, f"run_id={run_id}", *common))
    by_files = generate(entry_cfg("generate", root, f"ckpt_path={ckpt}", f"tokenizer_path={tok}", *common))
    assert by_run == by_files and len(set(by_run)) > 1


@pytest.mark.parametrize("overrides,fragment", [
    (["run_id=0123456789abcdef"], "run_id=0123456789abcdef not found"),
    ([], "no model: give run_id="),
    (["ckpt_path=/nonexistent.ckpt", "tokenizer_path=/nonexistent.json"], "ckpt_path=/nonexistent.ckpt is not a file"),
    (["decoding=topk", "decoding.k=0"], "decoding.k=0 must be an integer >= 1"),
])
def test_generate_bad_input_is_one_line(trained, overrides, fragment):
    from seqbench.generate import generate

    root, _ = trained
    with pytest.raises(ConfigError) as e:
        generate(entry_cfg("generate", root, *overrides))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_generate_cli_unknown_strategy(monkeypatch, capsys):
    from seqbench.generate import main

    monkeypatch.setattr(sys, "argv", ["seqbench.generate", "decoding=nucleus"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert "unknown decoding 'nucleus'; valid choices: beam, greedy, sample, topk, topp" in capsys.readouterr().err


def test_generate_cli_subprocess(trained):
    root, run_id = trained
    env = {**os.environ, "SEQBENCH_ROOT": str(root)}
    proc = subprocess.run([sys.executable, "-m", "seqbench.generate", f"run_id={run_id}", "decoding=beam",
                           "decoding.beam_width=5", "prompt=the dog", "max_new_tokens=30"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("# decoding=beam prompt='the dog'")
    assert lines[1].startswith("the dog") and len(lines[1]) >= len("the dog")


def test_compare_decoding_table_and_mlflow_run(trained):
    from seqbench.compare_decoding import compare

    root, run_id = trained
    result = compare(entry_cfg("compare_decoding", root, f"run_id={run_id}", "num_samples=3",
                               "max_new_tokens=30"))
    names = group_options("decoding")
    assert set(result["metrics"]) == set(names)
    rows = [line for line in result["table"].splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + len(names)
    assert {r.split("|")[1].strip() for r in rows[2:]} == set(names)
    for header in ("NLL/char", "dist-2", "rep-4", "self-BLEU", "copy-4", "grammatical", "tokens/s"):
        assert header in rows[0]
    assert result["metrics"]["beam"]["self_bleu"] == pytest.approx(100.0)  # deterministic: identical samples
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "decode" and run.data.tags["source_run_id"] == run_id
    assert run.data.tags["decoding"] == ",".join(names)
    for name in names:
        for metric in ("nll_per_char", "distinct_2", "repetition_4", "self_bleu", "copy_4",
                       "grammatical_rate", "tokens_per_s"):
            assert f"{name}/{metric}" in run.data.metrics
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"decoding_comparison.md", "samples"} <= artifacts
    table = open(client.download_artifacts(run.info.run_id, "decoding_comparison.md", str(root))).read()
    assert table == result["table"]
    # the parent training run is untouched: still one run of task lm
    assert client.get_run(run_id).data.tags["task"] == "lm"
