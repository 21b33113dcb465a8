"""The verdict of a report table, written from the numbers alone.

* ranking: the comparable rows (some result, not lossy †) by mean, best first;
* significant pairs: two-sided Welch tests of every pair of comparable rows, Holm-adjusted over the
  pairs, p < α (0.05);
* top group: the top row and every comparable row not significantly different from it (a row with
  n < 2 cannot be tested, so it cannot be told apart);
* leader: the top row when it is significantly better than every other comparable row (top group
  of one, at least two comparable rows);
* winner (★): the leader, only when the comparison converged: at least ``CONVERGED_SHARE`` of the
  runs of every ranked row stopped because validation stopped improving (rows not trained by
  gradient aside). A leader at a budget that ran out is named "at this budget", without ★: it
  ranks learning speed, not the rows. With no leader the text names the indistinguishable rows;
* warnings: failed or missing runs, n < 3 seeds, runs that did not converge (``converged`` = 0:
  the budget ran out before early stopping fired), or no ``converged`` metric at all (trained for
  a fixed budget; convergence not checked).

:func:`decide` takes plain arrays (label -> values), so it is tested without MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from seqbench.report.statistics import ALPHA, Comparison, compare, finite, fmt, fmt_p, fmt_signed, lookup

#: fewer seeds than this get a warning: sd and p rest on too few runs
MIN_SEEDS = 3
#: significant pairs named in the text (the rest are in the pairwise table)
MAX_PAIRS_IN_TEXT = 10
#: share of a row's runs that must have converged (early stopping fired) for its comparison to count
CONVERGED_SHARE = 0.9


@dataclass
class Verdict:
    metric: str
    direction: str                                  # "min" or "max"
    ranking: list[str]                              # comparable rows, best mean first
    means: dict[str, float]
    comparisons: dict[tuple[str, str], Comparison]  # every pair of ranked rows, Holm-adjusted
    significant: list[Comparison]                   # Holm p < alpha; ``a`` is the better row
    top_group: list[str]                            # rows not separable from the top row
    winner: str | None                              # ★: the leader of a converged comparison, else None
    leader: str | None = None                       # the top row when separable from every other
    converged: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # row -> (converged, runs)
    not_ranked: list[str] = field(default_factory=list)   # lossy rows †
    warnings: list[str] = field(default_factory=list)
    alpha: float = ALPHA
    text: str = ""


def plural(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if k == 1 else "s")


def name(label: str) -> str:
    """A row label in a sentence: one with a comma (``rnn, length=50``) is set as code."""
    return f"`{label}`" if "," in label else label


def words(labels: list[str]) -> str:
    """a; a and b; a, b and c."""
    labels = [name(label) for label in labels]
    return " and ".join(labels) if len(labels) < 3 else ", ".join(labels[:-1]) + " and " + labels[-1]


def decide(values: dict[str, np.ndarray], direction: str, *, metric: str = "primary",
           converged: dict[str, np.ndarray] | None = None, expected: dict[str, int] | None = None,
           lossy=(), alpha: float = ALPHA) -> Verdict:
    """The verdict of one table. ``values``: row -> the metric per finished run (nan = absent);
    ``direction``: "min" or "max"; ``converged``: row -> the runs' ``converged`` metric (1 / 0 /
    nan = not logged; None: not trained by gradient, convergence does not apply); ``expected``: row
    -> runs the study asked for; ``lossy``: rows never ranked."""
    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")
    sign = 1 if direction == "min" else -1
    n = {label: len(finite(v)) for label, v in values.items()}
    means = {label: float(finite(v).mean()) for label, v in values.items() if n[label]}
    ranking = sorted((label for label in means if label not in lossy), key=lambda label: sign * means[label])
    comparisons = compare(values, ranking)
    significant = [c if sign * c.diff < 0 else c.flipped() for c in comparisons.values() if c.significant(alpha)]
    significant.sort(key=lambda c: (ranking.index(c.a), ranking.index(c.b)))
    top = ranking[0] if ranking else None
    top_group = [top] + [r for r in ranking[1:] if not lookup(comparisons, top, r).significant(alpha)] if top else []
    leader = top if len(ranking) >= 2 and len(top_group) == 1 else None
    counts = convergence_counts(values, converged)
    winner = leader if all_converged(counts, ranking) else None
    v = Verdict(metric, direction, ranking, means, comparisons, significant, top_group, winner, leader, counts,
                not_ranked=[label for label in values if label in lossy and n[label]],
                warnings=row_warnings(values, n, converged, expected), alpha=alpha)
    v.text = sentences(v)
    return v


def convergence_counts(values, converged) -> dict[str, tuple[int, int] | None]:
    """Row -> (runs that converged, runs with a ``converged`` flag); None for a row not trained by
    gradient (nothing to converge); (0, 0) when no run logged the flag (a fixed budget)."""
    counts = {}
    for label in values:
        flags = (converged or {}).get(label, [])
        if flags is None:
            counts[label] = None
        else:
            flags = finite(flags)
            counts[label] = (int((flags == 1).sum()), len(flags))
    return counts


def all_converged(counts: dict[str, tuple[int, int] | None], rows: list[str]) -> bool:
    """Every one of ``rows`` converged in at least ``CONVERGED_SHARE`` of its runs."""
    return all(counts.get(r) is None or (counts[r][1] > 0 and counts[r][0] >= CONVERGED_SHARE * counts[r][1])
               for r in rows)


def row_warnings(values, n, converged, expected) -> list[str]:
    """One line per kind of problem, naming its rows ("every row" when it concerns all of them)."""
    rows: dict[str, list[str]] = {}
    for label in values:
        asked = (expected or {}).get(label, n[label])
        if asked > n[label]:
            rows.setdefault(f"{asked - n[label]} of {asked} runs failed or missing", []).append(label)
        if not n[label]:
            continue
        if n[label] < MIN_SEEDS:
            rows.setdefault(f"n = {n[label]} < {MIN_SEEDS} seeds (sd and p-values rest on too few runs)", []).append(label)
        flags = (converged or {}).get(label, [])
        if flags is None:  # not trained by gradient (task=ngram): convergence does not apply
            continue
        flags = finite(flags)
        if not len(flags):
            rows.setdefault("trained for a fixed budget; convergence not checked", []).append(label)
        elif (flags == 0).any():
            rows.setdefault(f"{int((flags == 0).sum())} of {len(flags)} runs did not converge (the budget ran out "
                            "before early stopping fired)", []).append(label)
    return [f"{'every row' if len(labels) > 1 and labels == list(values) else words(labels)}: {msg}"
            for msg, labels in rows.items()]


def p_text(p: float) -> str:
    """"= 0.0123" or "< 0.0001"."""
    text = fmt_p(p)
    return f"< {text[1:]}" if text.startswith("<") else f"= {text}"


def pair_text(c: Comparison, direction: str) -> str:
    ci = "" if math.isnan(c.ci[0]) else f", 95 % CI [{fmt_signed(c.ci[0])}, {fmt_signed(c.ci[1])}]"
    g = "" if math.isnan(c.g) else f", g = {c.g:+.2f}"
    return f"{name(c.a)} {'<' if direction == 'min' else '>'} {name(c.b)} (Δ = {fmt_signed(c.diff)}{ci}{g}, Holm p {p_text(c.p_holm)})"


def sentences(v: Verdict) -> str:
    """The verdict paragraph."""
    if not v.ranking:
        parts = [f"No comparable run has {v.metric}: nothing to rank."]
    else:
        better = "lower" if v.direction == "min" else "higher"
        parts = [f"Ranking by mean {v.metric} ({better} is better): "
                 + ", ".join(f"{name(label)} {fmt(v.means[label])}" for label in v.ranking) + "."]
    if v.not_ranked:
        parts.append(f"Not ranked (lossy vocabulary †, not comparable): {words(v.not_ranked)}.")
    if len(v.ranking) == 1:
        parts.append(f"Only one comparable row ({name(v.ranking[0])}): nothing to compare, no winner.")
    elif len(v.ranking) > 1:
        tested = sum(not math.isnan(c.p_holm) for c in v.comparisons.values())
        if v.significant:
            shown = [pair_text(c, v.direction) for c in v.significant[:MAX_PAIRS_IN_TEXT]]
            more = len(v.significant) - len(shown)
            parts.append(f"Significant after Holm (α = {v.alpha}, {plural(tested, 'pair')} tested): " + "; ".join(shown)
                         + (f"; and {more} more (pairwise table)" if more else "") + ".")
        elif tested:
            parts.append(f"No difference is significant after Holm (α = {v.alpha}, {plural(tested, 'pair')} tested).")
        else:
            parts.append("No pair could be tested (Welch's test needs n ≥ 2 runs per row and some variance).")
        top = v.ranking[0]
        if v.winner:
            parts.append(f"★ {name(v.winner)}: significantly better than every other row (Holm-adjusted p < {v.alpha}).")
        elif v.leader:
            parts.append(f"At this budget {name(v.leader)} is significantly better than every other row (Holm-adjusted "
                         f"p < {v.alpha}), but not every row converged, so this ranks how fast the rows learn, not "
                         f"where they end: no winner is named.")
        else:
            untested = any(math.isnan(lookup(v.comparisons, top, r).p_holm) for r in v.top_group[1:])
            why = f"Holm-adjusted p ≥ {v.alpha}" + (" or too few runs to test" if untested else "")
            parts.append(f"No winner: {words(v.top_group)} are indistinguishable ({why} against the top row {name(top)}).")
    if v.warnings:
        parts.append("Warnings: " + "; ".join(v.warnings) + ".")
    return " ".join(parts)
