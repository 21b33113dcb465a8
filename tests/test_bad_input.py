"""Bad input on the command line: one line naming the bad value (and what is valid), exit 2, and
no MLflow store or run left behind; examples of such lines in the README are real output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import PROJECT, cli
from seqbench.errors import ConfigError
from seqbench.validate import check_keys, check_overrides, group_options


@pytest.mark.parametrize("args, message", [
    (["seed=abc"], "seed='abc' must be an integer (e.g. seed=0)"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1"),
    (["foo=bar"], "unknown key 'foo'; closest valid keys: "),
    (["model.nonexistent_key=1"], "unknown key 'model.nonexistent_key'; closest valid keys: model."),
    (["model=quantum"], f"unknown model 'quantum'; valid choices: {', '.join(group_options('model'))}"),
])
def test_bad_input_is_one_line_and_no_run(tmp_path, args, message):
    p = cli(*args, root=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"seqbench: error: {message}"), p.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no store, so no run


@pytest.mark.parametrize("override, closest", [
    ("model.hiden_size=8", "model.hidden_size"),       # a typo: the nearest spelling of that group's keys
    ("task.lr=0.01", "optimizer.lr"),                  # a key that lives elsewhere: same last part first
    ("trainer.max_epoch=3", "trainer.max_epochs"),
])
def test_unknown_key_names_the_closest_valid_keys(override, closest):
    with pytest.raises(ConfigError) as e:
        check_keys([override])
    key = override.split("=")[0]
    assert str(e.value).startswith(f"unknown key '{key}'; closest valid keys: {closest}")


def test_known_keys_and_appends_pass():
    check_keys(["model=gru", "model.hidden_size=8", "seed=3", "+extra=1", "hydra.launcher.n_jobs=2",
                "tokenizer=bpe,word", "tokenizer.vocab_size=100", "task.generate.prompt=x"])


def test_error_examples_in_the_docs_are_real_output():
    """Every ``seqbench: error: unknown <group> '<x>'; valid choices: ...`` line in README and docs/
    is what check_overrides prints today (choices come from the YAML files, so they drift)."""
    docs = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")),
            PROJECT / "src" / "seqbench" / "validate.py"]
    pattern = re.compile(r"unknown (\w+) '(\w+)'; valid choices: ([a-z0-9_, ]+[a-z0-9_])")
    found = 0
    for path in docs:
        for group, value, choices in pattern.findall(path.read_text()):
            with pytest.raises(ConfigError) as e:
                check_overrides([f"{group}={value}"])
            assert str(e.value) == f"unknown {group} '{value}'; valid choices: {choices}", path
            found += 1
    assert found >= 1


def test_a_mandatory_value_is_a_known_key_and_its_absence_is_one_line():
    """``path: ???`` in a YAML: setting it is not an unknown key; leaving it unset names the key."""
    from omegaconf import OmegaConf

    from seqbench.validate import check_mandatory, has_key

    check_keys(["embedding=pretrained", "embedding.path=/data/glove.txt"])
    cfg = OmegaConf.create({"model": {"name": "x", "vectors": "???"}, "seed": 0})
    assert has_key(cfg, "model.vectors") and not has_key(cfg, "model.vector")
    with pytest.raises(ConfigError, match=r"^model.vectors is mandatory and has no value: set model.vectors=\.\.\. "):
        check_mandatory(cfg)
    check_mandatory(OmegaConf.create({"model": {"vectors": "/v.txt"}}))
