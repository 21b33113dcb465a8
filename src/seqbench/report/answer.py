"""The first lines of a report: the answer, one sentence per table, in words a user can act on —
which row to use, by how much, how sure — before any table. A quick twin's report says first that
it is a smoke run."""

from __future__ import annotations

import numpy as np

from seqbench.report.statistics import fmt, lookup, mean_or_nan
from seqbench.report.verdict import all_converged, name, p_text, words


def smoke_banner(study: dict) -> list[str]:
    """``smoke: <full study>`` in a study file marks it as the quick twin of that study."""
    full = study.get("smoke")
    if not full:
        return []
    return [f"> **Smoke run, not a result.** `{study['name']}` is the quick twin of `{full}`: its budgets are "
            f"cut so that the whole pipeline runs in minutes, so nothing below says anything about the rows. "
            f"For the answer run `make sweep STUDY={full} && make report STUDY={full}`.", ""]


def cheapest(t: dict, rows: list[str], cost: str) -> tuple[str, float] | None:
    costs = {r: mean_or_nan(t["values"][r].get(cost, [])) for r in rows}
    costs = {r: c for r, c in costs.items() if not np.isnan(c)}
    return min(costs.items(), key=lambda kv: kv[1]) if costs else None


def answer(t: dict) -> str:
    """One sentence (or two) answering a table."""
    v, metric = t["verdict"], t["primary"]
    where = f"**{t['task']} / {t['data']}**"
    if not v.ranking:
        return f"{where}: no comparable finished run, so no answer."
    if len(v.ranking) == 1:
        return f"{where}: only {name(v.ranking[0])} has results; nothing to compare."
    converged = all_converged(v.converged, v.ranking)
    unconverged = [r for r in v.ranking if not all_converged(v.converged, [r])]
    top = v.ranking[0]
    runner = v.ranking[1]
    margin = (f"{metric} {fmt(v.means[top])} against {fmt(v.means[runner])} for the next best, {name(runner)} "
              f"(Holm p {p_text(lookup(v.comparisons, top, runner).p_holm)})")
    if v.winner:
        return f"{where}: use **{name(v.winner)}** — {margin}; every row converged."
    if v.leader:
        return (f"{where}: at this budget **{name(v.leader)}** leads — {margin} — but {words(unconverged)} did not "
                f"converge, so this ranks learning speed: train longer before choosing.")
    text = (f"{where}: {words(v.top_group)} are indistinguishable on {metric} (best mean {name(top)} "
            f"{fmt(v.means[top])}; no pair among them differs at Holm-adjusted p < {v.alpha})")
    fast, small = cheapest(t, v.top_group, "time_to_best_s"), cheapest(t, v.top_group, "num_parameters")
    if fast and small:
        text += (f"; of these, {name(fast[0])} reaches its result fastest ({fmt(fast[1])} s of training) and "
                 + (f"has" if small[0] == fast[0] else f"{name(small[0])} has")
                 + f" the fewest parameters ({fmt(small[1])})")
    if not converged:
        text += f" — at this budget: {words(unconverged)} did not converge"
    return text + "."


def answer_section(tables: list[dict]) -> list[str]:
    if not tables:
        return []
    return ["## The answer", "", *[f"- {answer(t)}" for t in tables], ""]
