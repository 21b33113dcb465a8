"""Report tables from MLflow-shaped run records: pairwise Welch tests with Holm's correction,
effect sizes, the verdict (no ★ when the top is not separable), lossy vocabularies, html rendering."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from seqbench.report import build_tables, compare, decide, hedges_g, holm, welch, write_report
from seqbench.report.plots import zoomed_limits
from seqbench.study import expected_runs


def fake_runs(expected, metrics_of) -> pd.DataFrame:
    rows = []
    for e in expected:
        row = {"run_id": e.hash, "status": "FINISHED", "tags.config_hash": e.hash, "tags.study": "t"}
        row.update({f"metrics.{k}": v for k, v in metrics_of(e).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def tokenizer_table(tmp_path, bpe: list[float]) -> dict:
    study = {"name": "t", "seeds": [0, 1, 2],
             "grids": [{"overrides": ["task=lm", "tokenizer=char,bpe,word", "model=gru"]}]}
    expected = expected_runs(study, str(tmp_path))
    bpc = {"char": [3.0, 3.1, 3.2], "bpe": bpe, "word": [1.3, 1.4, 1.5]}
    runs = fake_runs(expected, lambda e: {
        "test/bits_per_char": bpc[e.cfg.tokenizer.name][e.cfg.seed],
        "test/unk_rate": 0.2 if e.cfg.tokenizer.name == "word" else 0.0,
        "num_parameters": 1000, "train/tokens_per_s": 5000.0, "wall_time_s": 10.0, "converged": 1.0})
    (table,) = build_tables(expected, runs, [0, 1, 2])
    return table


def test_lossy_vocabulary_is_flagged_and_never_ranked(tmp_path):
    table = tokenizer_table(tmp_path, [2.8, 2.9, 3.0])
    rows = {r[0]: r for r in table["rows"]}
    # bpe has the best comparable mean, but char is within noise of it: no ★, and word (the lowest
    # bits/char) is not comparable at all
    assert set(rows) == {"char", "bpe", "word †"}
    col = {h: table["header"].index(h) for h in ("rank", "Δ vs top [95 % CI]", "Holm p vs top")}
    assert rows["word †"][col["rank"]] == "not ranked †" and rows["word †"][col["Δ vs top [95 % CI]"]] == "not comparable †"
    assert rows["bpe"][col["rank"]] == "1" and rows["char"][col["rank"]] == "2"
    expected_p = stats.ttest_ind([3.0, 3.1, 3.2], [2.8, 2.9, 3.0], equal_var=False).pvalue  # one pair: Holm = raw
    assert rows["char"][col["Holm p vs top"]] == f"{expected_p:.4f}"
    assert rows["char"][col["Δ vs top [95 % CI]"]].startswith("+0.2000 [")
    assert rows["char"][1] == f"3.1000 ± {np.std([3.0, 3.1, 3.2], ddof=1):.4f} (n=3)"
    assert "test/unk_rate" in table["header"]
    v = table["verdict"]
    assert v.winner is None and v.top_group == ["bpe", "char"] and v.not_ranked == ["word †".removesuffix(" †")]
    assert "No winner: bpe and char are indistinguishable" in v.text
    # a clear gap: bpe is ★, word still never
    table = tokenizer_table(tmp_path, [2.50, 2.51, 2.52])
    assert [r[0] for r in table["rows"]] == ["char", "★ bpe", "word †"]
    assert table["verdict"].winner == "bpe"


def test_unk_column_hidden_when_every_vocabulary_is_lossless(tmp_path):
    study = {"name": "t", "seeds": [0, 1], "grids": [{"overrides": ["task=lm", "model=rnn,gru"]}]}
    expected = expected_runs(study, str(tmp_path))
    runs = fake_runs(expected, lambda e: {"test/bits_per_char": 2.0 + (e.cfg.model.name == "rnn") + 0.1 * e.cfg.seed,
                                          "test/unk_rate": 0.0, "converged": 1.0})
    (table,) = build_tables(expected, runs, [0, 1])
    assert "test/unk_rate" not in table["header"]
    assert [r[0] for r in table["rows"]] == ["rnn", "★ gru"]  # 1 bit/char apart, sd 0.07: p = 0.01 even at n = 2
    assert "gru, rnn: n = 2 < 3 seeds" in table["verdict"].text or "every row: n = 2 < 3 seeds" in table["verdict"].text


def test_ngram_row_is_named_by_its_task_and_has_no_convergence_warning(tmp_path):
    """task=ngram ignores the model group: its row is "ngram", not the default model's name, and it
    is not flagged as unconverged (one counting pass; its runs log no ``converged``)."""
    study = {"name": "t", "seeds": [0, 1, 2],
             "grids": [{"overrides": ["task=lm", "model=lstm,gru"]}, {"overrides": ["task=ngram"]}]}
    expected = expected_runs(study, str(tmp_path))
    bpc = {"lstm": 3.0, "gru": 3.1, "ngram": 2.0}
    runs = fake_runs(expected, lambda e: {
        "test/bits_per_char": bpc["ngram" if e.cfg.task.name == "ngram" else e.cfg.model.name] + 0.01 * e.cfg.seed,
        **({} if e.cfg.task.name == "ngram" else {"converged": 1.0})})
    (table,) = build_tables(expected, runs, [0, 1, 2])
    assert [r[0] for r in table["rows"]] == ["lstm", "gru", "★ ngram"]
    assert not table["verdict"].warnings


# -- statistics ---------------------------------------------------------------------------------------
def test_holm_is_the_step_down_formula_and_matches_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.6, np.nan])
    # by hand: sorted 0.01, 0.03, 0.04, 0.6 (m = 4, the nan pair is not tested) -> times 4, 3, 2, 1
    # = 0.04, 0.09, 0.08, 0.6 -> running max 0.04, 0.09, 0.09, 0.6
    by_hand = np.array([0.04, 0.09, 0.09, 0.6, np.nan])
    ok = ~np.isnan(p)
    order = np.argsort(p[ok])
    m = ok.sum()
    formula = np.minimum(1, np.maximum.accumulate([(m - i) * p[ok][j] for i, j in enumerate(order)]))
    np.testing.assert_allclose(np.sort(formula), np.sort(by_hand[ok]))
    np.testing.assert_allclose(holm(p), by_hand)
    np.testing.assert_allclose(holm(p)[ok], multipletests(p[ok], method="holm")[1])


def test_pairwise_comparisons_are_holm_adjusted_over_the_table():
    values = {"a": np.array([1.0, 1.1, 1.2]), "b": np.array([1.3, 1.35, 1.5]), "c": np.array([1.9, 2.0, 2.2])}
    pairs = compare(values)
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    raw = [stats.ttest_ind(values[a], values[b], equal_var=False).pvalue for a, b in pairs]
    np.testing.assert_allclose([c.p for c in pairs.values()], raw)
    np.testing.assert_allclose([c.p_holm for c in pairs.values()], multipletests(raw, method="holm")[1])


def test_welch_ci_and_hedges_g_match_their_formulas():
    a, b = np.array([2.1, 2.4, 2.2, 2.6]), np.array([1.7, 1.9, 1.6])
    diff, (lo, hi), p = welch(a, b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))    # Welch–Satterthwaite
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (lo, hi) == pytest.approx((diff - half, diff + half))
    assert p == pytest.approx(2 * stats.t.sf(abs(diff) / np.sqrt(va + vb), df))
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert hedges_g(a, b) == pytest.approx((1 - 3 / (4 * (len(a) + len(b)) - 9)) * diff / pooled)
    assert np.isnan(welch(a, b[:1])[2]) and np.isnan(hedges_g(a, b[:1]))   # n < 2: no test


# -- verdict ------------------------------------------------------------------------------------------
def test_verdict_names_a_clear_winner():
    v = decide({"lstm": [0.64, 0.65, 0.66], "gru": [0.52, 0.53, 0.52], "rnn": [0.70, 0.71, 0.69]}, "min",
               metric="bpc", converged={k: [1, 1, 1] for k in ("lstm", "gru", "rnn")})
    assert v.ranking == ["gru", "lstm", "rnn"] and v.winner == "gru" and v.top_group == ["gru"]
    assert {(c.a, c.b) for c in v.significant} == {("gru", "lstm"), ("gru", "rnn"), ("lstm", "rnn")}
    assert "★ gru: significantly better than every other row" in v.text and not v.warnings
    assert v.text.startswith("Ranking by mean bpc (lower is better): gru 0.5233, lstm 0.6500, rnn 0.7000.")


def test_no_winner_when_the_top_rows_are_indistinguishable():
    v = decide({"lstm": [0.72, 0.70, 0.74], "gru": [0.73, 0.71, 0.69], "rnn": [0.50, 0.52, 0.51]}, "max",
               metric="accuracy", converged={k: [1, 1, 1] for k in ("lstm", "gru", "rnn")})
    assert v.ranking == ["lstm", "gru", "rnn"] and v.winner is None and v.top_group == ["lstm", "gru"]
    assert "No winner: lstm and gru are indistinguishable (Holm-adjusted p ≥ 0.05" in v.text
    assert "★" not in v.text and "lstm > rnn" in v.text and "gru > rnn" in v.text


def test_verdict_warns_about_few_seeds_unconverged_and_missing_runs():
    v = decide({"lstm": [0.64, 0.65], "gru": [0.52, 0.53, 0.52], "rnn": []}, "min",
               converged={"lstm": [1, 1], "gru": [0, 1, 0]}, expected={"lstm": 3, "gru": 3, "rnn": 3})
    # a clear gap, but gru's runs mostly ran out of budget: a leader at this budget, never ★
    assert v.leader == "gru" and v.winner is None and v.converged == {"lstm": (2, 2), "gru": (1, 3), "rnn": (0, 0)}
    assert "At this budget gru is significantly better than every other row" in v.text and "★" not in v.text
    warnings = " ".join(v.warnings)
    assert "lstm: 1 of 3 runs failed or missing" in warnings and "rnn: 3 of 3 runs failed or missing" in warnings
    assert "lstm: n = 2 < 3 seeds" in warnings
    assert "gru: 2 of 3 runs did not converge" in warnings
    v = decide({"a": [1.0, 1.1, 1.2], "b": [2.0, 2.1, 2.2]}, "min")
    assert v.warnings == ["every row: trained for a fixed budget; convergence not checked"]


def test_a_lossy_row_is_never_the_winner():
    v = decide({"word": [0.1, 0.11, 0.12], "bpe": [2.0, 2.01, 2.02], "char": [3.0, 3.01, 3.02]}, "min", lossy={"word"},
               converged={k: [1, 1, 1] for k in ("word", "bpe", "char")})
    assert v.winner == "bpe" and v.ranking == ["bpe", "char"] and v.not_ranked == ["word"]
    v = decide({"word": [0.1, 0.11, 0.12], "char": [3.0, 3.01, 3.02]}, "min", lossy={"word"})
    assert v.winner is None and "Only one comparable row (char)" in v.text


# -- rendering ----------------------------------------------------------------------------------------
def test_report_html_renders_the_markdown_and_embeds_the_plots(tmp_path):
    study = {"name": "t", "seeds": [0, 1, 2], "grids": [{"overrides": ["task=lm", "model=rnn,gru,lstm"]}]}
    expected = expected_runs(study, str(tmp_path))
    bpc = {"rnn": [2.60, 2.61, 2.62], "gru": [2.45, 2.44, 2.46], "lstm": [2.47, 2.45, 2.50]}
    runs = fake_runs(expected, lambda e: {"test/bits_per_char": bpc[e.cfg.model.name][e.cfg.seed],
                                          "converged": float(e.cfg.seed != 2)})
    # validation curves of different lengths: early-stopped runs end before the budget
    history = {e.hash: [SimpleNamespace(step=10 * i, value=3.0 - 0.1 * i) for i in range(3 + (e.cfg.seed == 2))]
               for e in expected}
    tracker = SimpleNamespace(client=SimpleNamespace(get_metric_history=lambda run_id, key: history[run_id]))
    out = write_report(study, expected, runs, tracker, tmp_path / "report")
    md, html = (out["dir"] / "report.md").read_text(), (out["dir"] / "report.html").read_text()
    assert "Protocol: task **lm**" in md and "**Verdict.**" in md and "**Pairwise comparisons**" in md
    assert "<strong>lm</strong>" in html and "<strong>Verdict.</strong>" in html and "**" not in html
    assert html.count("data:image/png;base64,") == 2 == len(out["images"])
    assert "No winner: gru and lstm are indistinguishable" in md and "★" not in md.split("## Failed")[0].split("\n| ")[0]
    assert "every row: 1 of 3 runs did not converge" in md


def test_bar_axis_is_zoomed_to_the_data():
    lo, hi = zoomed_limits([2.44, 2.46], [2.47, 2.49])
    assert 2.4 < lo < 2.44 and 2.49 < hi < 2.55        # not from 0: a 0.02 gap is visible


def test_long_range_studies_get_their_section(tmp_path):
    """Task-specific sections are modules of seqbench.report.sections, appended where they apply."""
    study = {"name": "lr", "seeds": [0, 1],
             "grids": [{"overrides": ["task=adding", "data=adding", "data.length=10,20", "model=rnn,lstm"]}]}
    expected = expected_runs(study, str(tmp_path))
    mse = {("rnn", 10): 0.05, ("rnn", 20): 0.17, ("lstm", 10): 0.01, ("lstm", 20): 0.02}
    runs = fake_runs(expected, lambda e: {"test/mse": mse[e.cfg.model.name, e.cfg.data.length] + 0.01 * e.cfg.seed,
                                          "test/baseline_mse": 0.167})
    tracker = SimpleNamespace(client=SimpleNamespace(get_metric_history=lambda run_id, key: []))
    out = write_report(study, expected, runs, tracker, tmp_path / "report")
    md = (out["dir"] / "report.md").read_text()
    assert "## adding / adding" in md and "| rnn, length=10 |" in md.replace("★ ", "")
    assert "## Long-range dependencies" in md and "### adding problem: test/mse vs sequence length T" in md
    section = md.split("## Long-range dependencies")[1]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["rnn"].rstrip(" |").endswith("20") and "beats it everywhere" in rows["lstm"]
    assert any(p.name.startswith("longrange_") for p in out["images"])
