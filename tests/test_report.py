"""Report tables from MLflow-shaped run records: best row, significance, lossy vocabularies."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from seqbench.report import build_tables
from seqbench.study import expected_runs


def fake_runs(expected, metrics_of) -> pd.DataFrame:
    rows = []
    for e in expected:
        row = {"run_id": e.hash, "status": "FINISHED", "tags.config_hash": e.hash, "tags.study": "t"}
        row.update({f"metrics.{k}": v for k, v in metrics_of(e).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def test_lossy_vocabulary_is_flagged_and_never_best(tmp_path):
    study = {"name": "t", "seeds": [0, 1, 2],
             "grids": [{"overrides": ["task=lm", "tokenizer=char,bpe,word", "model=gru"]}]}
    expected = expected_runs(study, str(tmp_path))
    bpc = {"char": [3.0, 3.1, 3.2], "bpe": [2.8, 2.9, 3.0], "word": [1.3, 1.4, 1.5]}
    runs = fake_runs(expected, lambda e: {
        "test/bits_per_char": bpc[e.cfg.tokenizer.name][e.cfg.seed],
        "test/unk_rate": 0.2 if e.cfg.tokenizer.name == "word" else 0.0,
        "num_parameters": 1000, "train/tokens_per_s": 5000.0, "wall_time_s": 10.0})
    (table,) = build_tables(expected, runs, [0, 1, 2])
    rows = {r[0]: r for r in table["rows"]}
    assert set(rows) == {"char", "★ bpe", "word †"}  # word has the lowest bits/char but is not comparable
    p_col = table["header"].index("p vs best (test/bits_per_char)")
    assert rows["word †"][p_col] == "not comparable †"
    expected_p = stats.ttest_ind(bpc["char"], bpc["bpe"], equal_var=False).pvalue
    assert rows["char"][p_col] == f"{expected_p:.4f}"
    assert rows["char"][1] == f"3.1000 ± {np.std(bpc['char'], ddof=1):.4f} (n=3)"
    assert "test/unk_rate" in table["header"]


def test_unk_column_hidden_when_every_vocabulary_is_lossless(tmp_path):
    study = {"name": "t", "seeds": [0, 1], "grids": [{"overrides": ["task=lm", "model=rnn,gru"]}]}
    expected = expected_runs(study, str(tmp_path))
    runs = fake_runs(expected, lambda e: {"test/bits_per_char": 2.0 + (e.cfg.model.name == "rnn") + 0.1 * e.cfg.seed,
                                          "test/unk_rate": 0.0})
    (table,) = build_tables(expected, runs, [0, 1])
    assert "test/unk_rate" not in table["header"]
    assert [r[0] for r in table["rows"]] == ["rnn", "★ gru"]
