"""Published findings, the quality/cost front, convergence counts and the answer-first lines of a
report: on known numbers, and end to end from a constructed MLflow store through
``python -m seqbench.report``."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from seqbench.report.answer import answer
from seqbench.report.findings import AGREES, CANT_TELL, DISAGREES, Finding, judge, judge_all
from seqbench.report.frontier import pareto_front
from seqbench.report.tables import converged_cell
from seqbench.report.verdict import decide


# -- the Pareto front ---------------------------------------------------------------------------------
def test_pareto_front_by_brute_force():
    # (quality, cost): lower quality is better here
    points = {"a": (1.0, 10.0), "b": (0.9, 20.0), "c": (1.1, 5.0), "d": (1.0, 30.0), "e": (0.9, 20.0),
              "f": (np.nan, 1.0)}
    front = pareto_front(points, "min")
    # d is dominated by a (same quality, dearer); b and e tie, neither dominates the other
    assert front == ["c", "a", "b", "e"]
    brute = [k for k, (q, c) in points.items() if not np.isnan(q)
             and not any(q2 <= q and c2 <= c and (q2, c2) != (q, c) for j, (q2, c2) in points.items() if j != k)]
    assert sorted(front) == sorted(brute)
    # higher is better: the order of quality flips
    assert pareto_front({"a": (0.9, 10.0), "b": (0.8, 5.0), "c": (0.7, 6.0)}, "max") == ["b", "a"]


# -- convergence --------------------------------------------------------------------------------------
def test_convergence_counts_and_the_star():
    values = {"gru": [0.50, 0.51, 0.52, 0.50], "lstm": [0.70, 0.71, 0.69, 0.70]}
    v = decide(values, "min", converged={"gru": [1, 1, 1, 1], "lstm": [1, 1, 1, 0]})
    assert v.converged == {"gru": (4, 4), "lstm": (3, 4)} and v.leader == "gru" and v.winner is None  # 3/4 < 90 %
    v = decide(values, "min", converged={"gru": [1, 1, 1, 1], "lstm": [1, 1, 1, 1]})
    assert v.winner == "gru"
    assert [converged_cell(c) for c in ((3, 4), (0, 0), None)] == ["3/4", "–", "n/a"]


# -- findings on known numbers ------------------------------------------------------------------------
def table_of(values: dict, direction: str = "min", converged=None) -> dict:
    converged = converged or {k: [1] * len(v) for k, v in values.items()}
    v = decide({k: np.array(x) for k, x in values.items()}, direction, converged=converged)
    return {"task": "lm", "data": "toy", "primary": "bpc", "direction": direction, "verdict": v,
            "values": {k: {"bpc": np.array(x)} for k, x in values.items()}}


ROWS = {"gru": [1.500, 1.510, 1.520, 1.505], "lstm": [1.502, 1.512, 1.518, 1.507],
        "rnn": [2.000, 2.100, 2.200, 2.050], "cifg": [1.300, 1.700, 1.500, 1.900]}


@pytest.mark.parametrize("relation, rows, verdict", [
    ("equal", ("gru", "lstm"), AGREES),          # CI of Δ inside ±2 % of 1.51
    ("equal", ("rnn", "lstm"), DISAGREES),       # 0.58 apart, Holm p < 0.05
    ("equal", ("cifg", "lstm"), CANT_TELL),      # noisy: CI spans the margin, not significant
    ("better", ("gru", "rnn"), AGREES),
    ("better", ("rnn", "gru"), DISAGREES),
    ("better", ("gru", "lstm"), DISAGREES),      # equivalent within the margin: no advantage
    ("better", ("cifg", "lstm"), CANT_TELL),
    ("not_worse", ("lstm", "rnn"), AGREES),      # lstm is better: certainly not worse
    ("not_worse", ("rnn", "lstm"), DISAGREES),
    ("not_worse", ("cifg", "gru"), CANT_TELL),
])
def test_each_relation_agrees_disagrees_or_cannot_tell(relation, rows, verdict):
    j = judge(Finding("claim", "Someone 2020", relation, rows), table_of(ROWS))
    assert j.verdict == verdict, j.evidence
    assert j.evidence.startswith(f"Δ = {rows[0]} − {rows[1]} = ") and "Holm p" in j.evidence and "margin ±" in j.evidence


def test_higher_is_better_flips_the_direction():
    acc = {"gru": [0.90, 0.91, 0.92], "rnn": [0.60, 0.61, 0.62]}
    assert judge(Finding("c", "x", "better", ("gru", "rnn")), table_of(acc, "max")).verdict == AGREES
    assert judge(Finding("c", "x", "better", ("rnn", "gru")), table_of(acc, "max")).verdict == DISAGREES


def test_a_disagreement_says_its_likely_reason():
    reason = "the study compares at equal parameters"
    f = Finding("c", "x", "better", ("rnn", "gru"), if_disagrees=reason)
    assert judge(f, table_of(ROWS)).note == f"likely reason: {reason}"
    unconverged = {k: [1, 1, 1, 1] for k in ROWS} | {"rnn": [0, 0, 1, 0]}
    j = judge(f, table_of(ROWS, converged=unconverged))
    assert j.verdict == DISAGREES
    assert j.note == ("at this budget: rnn converged in 1 of 4 runs; likely reason: the runs stopped before they "
                      "converged, so this compares learning speed")


def test_a_finding_without_its_rows_is_not_tested_and_tables_filter():
    t = table_of(ROWS)
    [j] = judge_all([Finding("c", "x", "better", ("lstm", "lstm_nfg"))], [t])
    assert j.verdict == "not tested" and "lstm_nfg" in j.evidence
    [j] = judge_all([Finding("c", "x", "better", ("gru", "rnn"), tables=("copy/copy",))], [t])
    assert j.verdict == "not tested"


def test_the_answer_names_the_row_to_use_or_says_at_this_budget():
    t = table_of({"gru": [0.50, 0.51, 0.52], "lstm": [0.70, 0.71, 0.69]})
    assert answer(t).startswith("**lm / toy**: use **gru** — bpc 0.5100 against 0.7000 for the next best, lstm")
    assert answer(t).endswith("every row converged.")
    t = table_of({"gru": [0.50, 0.51, 0.52], "lstm": [0.70, 0.71, 0.69]},
                 converged={"gru": [1, 1, 1], "lstm": [0, 0, 1]})
    assert answer(t).startswith("**lm / toy**: at this budget **gru** leads") and "lstm did not converge" in answer(t)
    t = table_of({"gru": [0.50, 0.52, 0.51], "lstm": [0.51, 0.50, 0.52]})
    t["values"]["gru"]["time_to_best_s"] = np.array([10.0, 12.0, 11.0])
    t["values"]["lstm"]["time_to_best_s"] = np.array([20.0, 22.0, 21.0])
    for k, p in (("gru", 900.0), ("lstm", 800.0)):
        t["values"][k]["num_parameters"] = np.array([p] * 3)
    assert answer(t) == ("**lm / toy**: gru and lstm are indistinguishable on bpc (best mean gru 0.5100; no pair "
                         "among them differs at Holm-adjusted p < 0.05); of these, gru reaches its result fastest "
                         "(11.00 s of training) and lstm has the fewest parameters (800.00).")


# -- end to end: a constructed MLflow store, the report command -------------------------------------
def test_report_from_an_mlflow_store_has_answer_findings_and_front(tmp_path, monkeypatch):
    from seqbench.report.cli import main
    from seqbench.study import expected_runs

    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    findings = tmp_path / "findings.yaml"
    findings.write_text(yaml.safe_dump([
        {"claim": "GRU ≈ LSTM", "citation": "Chung et al. 2014", "relation": "equal", "rows": ["gru", "lstm"]},
        {"claim": "RNN beats GRU", "citation": "Nobody 1999", "relation": "better", "rows": ["rnn", "gru"],
         "if_disagrees": "it does not"},
        {"claim": "CIFG ≈ LSTM", "citation": "Greff et al. 2017", "relation": "equal", "rows": ["cifg", "lstm"]}]))
    study = {"name": "toy", "seeds": [0, 1, 2, 3], "findings": str(findings), "smoke": "cells",
             "grids": [{"overrides": ["task=lm", "model=rnn,lstm,gru,cifg"]}]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(study))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("seqbench/toy")
    for e in expected_runs(study, str(tmp_path)):
        model = e.cfg.model.name
        run = client.create_run(exp, tags={"config_hash": e.hash, "study": "toy", "task": "lm"})
        for key, value in {"test/bits_per_char": ROWS[model][e.cfg.seed], "converged": 1.0,
                           "time_to_best_s": {"rnn": 5.0, "lstm": 30.0, "gru": 20.0, "cifg": 25.0}[model],
                           "num_parameters": {"rnn": 1e3, "lstm": 4e3, "gru": 3e3, "cifg": 3e3}[model]}.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id, "FINISHED")
    page = tmp_path / "docs" / "toy.md"
    page.parent.mkdir()
    assert main([str(path), "--out", str(tmp_path / "out"), "--page", str(page)]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    head = md.split("## lm / synthetic")[0]
    assert head.index("Smoke run, not a result") < head.index("## The answer")
    assert ("- **lm / synthetic**: gru, lstm and cifg are indistinguishable on test/bits_per_char (best mean gru "
            "1.5087; no pair among them differs at Holm-adjusted p < 0.05); of these, gru reaches its result fastest "
            "(20.00 s of training) and has the fewest parameters (3,000).") in head
    findings_md = md.split("## Published findings")[1]
    assert "1 agree, 1 disagree, 1 can't tell" in findings_md
    lines = {line.split(" | ")[0].lstrip("| "): line for line in findings_md.splitlines() if line.startswith("| ")}
    assert "| **agrees** |" in lines["GRU ≈ LSTM"] and "| **disagrees** |" in lines["RNN beats GRU"]
    assert "likely reason: it does not" in lines["RNN beats GRU"] and "| can't tell |" in lines["CIFG ≈ LSTM"]
    table = md.split("## lm / synthetic")[1].split("\n\n")[2]
    assert "| converged |" in table and "| Pareto front |" in table and "| 4/4 |" in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}
    assert rows["rnn"].endswith("| time, params | 4/4 |")          # cheapest on both costs
    assert rows["gru"].endswith("| time, params | 4/4 |")          # best quality at its cost
    assert rows["cifg"].endswith("| – | 4/4 |")                    # dominated by gru on both
    assert (tmp_path / "out" / "frontier_0_lm_synthetic.png").is_file()
    # the results page: the report under one provenance line, its plots beside it
    title, blank, line = page.read_text().splitlines()[:3]
    assert title == "# seqbench report: toy" and blank == ""
    assert line.startswith("*Made by `make sweep STUDY=toy && make report STUDY=toy` · code version ? · ")
    assert "](toy/frontier_0_lm_synthetic.png)" in page.read_text() and (tmp_path / "docs" / "toy" / "frontier_0_lm_synthetic.png").is_file()


def test_a_choice_won_by_less_than_the_seed_noise_is_a_near_tie():
    from seqbench.report.tuning import margin, tuning_section

    study = {"name": "t", "tuning": {"seed": 100}, "grids": [{"tune": {"optimizer.lr": [0.01, 0.03]}}]}
    choice = {"copy: model=cifg": {"objective": "val/best_loss", "direction": "min", "chosen": ["optimizer.lr=0.03"],
                                   "candidates": {"optimizer.lr=0.01": 0.412, "optimizer.lr=0.03": 0.410}},
              "copy: model=gru": {"objective": "val/best_loss", "direction": "min", "chosen": ["optimizer.lr=0.01"],
                                  "candidates": {"optimizer.lr=0.01": 0.10, "optimizer.lr=0.03": 0.30}}}
    assert margin(choice["copy: model=cifg"]) == pytest.approx(0.002) and margin(choice["copy: model=gru"]) == pytest.approx(0.2)
    md = "\n".join(tuning_section(study, choice, {"copy: model=cifg": 0.01, "copy: model=gru": 0.01}))
    assert "Tuning budget: 2 candidates for every point over optimizer.lr." in md
    assert "**Near ties:** copy: model=cifg: the chosen setting won by less than the noise between seeds" in md
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| copy")}
    assert rows["copy: model=cifg"].endswith("| near tie |") and rows["copy: model=gru"].endswith("| – |")


def test_every_shipped_findings_file_loads_and_names_rows_its_study_has():
    """Each study's findings parse, and a finding's rows are cells the study compares (or the
    finding is one the study cannot test, which the report then says)."""
    from seqbench.report.findings import FINDINGS_DIR, load_findings
    from seqbench.study import load_study, studies

    names = {p.stem for p in FINDINGS_DIR.glob("*.yaml")}
    assert names, "no findings file"
    for study in [load_study(s) for s in studies()]:
        if str(study.get("findings", study["name"])) in names:
            findings = load_findings(study)
            assert findings and all(f.citation and f.claim for f in findings)
