"""Comparison tables: one per (task, data) of a study. Rows = the configurations that vary (cell,
tokenizer, decoding, ...); columns = metric mean ± sd over seeds (n), the rank, the difference to
the top row with its Welch 95 % CI, Hedges' g and the Holm-adjusted p, parameters, throughput,
wall time and runs finished/expected. With each table: its :class:`~seqbench.report.verdict.Verdict`,
the pairwise Holm-p matrix and the table of every pair's effect size."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hydra.utils import get_class

from seqbench.protocol import protocol
from seqbench.report.frontier import fronts
from seqbench.report.labels import ROW_AXES, distinct_labels, row_label
from seqbench.report.runs import finished
from seqbench.report.statistics import fmt, fmt_p, fmt_signed, lookup, mean_or_nan, mean_sd
from seqbench.report.verdict import Verdict, decide
from seqbench.study import Expected

#: cost columns; throughput is tokens/s for token-stream tasks, examples/s for the others
COST = ["num_parameters", "train/tokens_per_s", "train/examples_per_s", "time_to_best_s", "wall_time_s"]
#: how training ended (``converged`` only with early stopping)
TRAINING = ["converged", "epochs_trained"]


def build_tables(expected: list[Expected], runs: pd.DataFrame, seeds: list) -> list[dict]:
    """One table per (task, data) over the FINISHED runs matching the expected hashes. A task that
    reads another task's datasets (``task=ngram``: the LM corpora) joins that task's table: the
    count-based floor is a row beside the neural LMs it is measured against."""
    done = finished(runs)
    by_hash = {h: g for h, g in done.groupby("tags.config_hash")} if len(done) else {}
    groups: dict[tuple, list[Expected]] = {}
    for e in expected:
        groups.setdefault((get_class(e.cfg.task._target_).data_task or e.cfg.task.name, e.cfg.data.name), []).append(e)
    tables = []
    for (task, data), items in groups.items():
        axes = [a for a in ROW_AXES if len({str(e.cfg[a].name) for e in items}) > 1] or ["model"]
        # a row label covering several settings (data.length, clipping, ...) names them: never averaged
        labels = distinct_labels(items, lambda e, axes=axes: row_label(e.cfg, axes))
        label_of = lambda e, labels=labels: labels[e.hash]
        own = next((e for e in items if e.cfg.task.name == task), items[0])
        task_class = get_class(own.cfg.task._target_)  # the task says what it ranks by and shows
        primary, direction = task_class.primary_metric
        metrics = [primary, *task_class.secondary_metrics]
        rows: dict[str, dict] = {}
        for e in items:
            row = rows.setdefault(label_of(e), {"runs": [], "expected": 0,
                                                "gradient": get_class(e.cfg.task._target_).trained_by_gradient})
            row["expected"] += 1
            if e.hash in by_hash:
                row["runs"].append(by_hash[e.hash].iloc[0])
        values = {label: {m: np.array([float(r.get(f"metrics.{m}", np.nan)) for r in row["runs"]])
                          for m in metrics + COST + TRAINING} for label, row in rows.items()}
        # a vocabulary with <unk> scores every unknown word as one token: its bits/char leave out
        # the cost of spelling those words, a lower bound no lossless tokenizer can be compared to
        lossy = {label for label, v in values.items() if "test/unk_rate" in v and mean_or_nan(v["test/unk_rate"]) > 0}
        verdict = decide({label: v[primary] for label, v in values.items()}, direction, metric=primary,
                         converged={label: v["converged"] if rows[label]["gradient"] else None
                                    for label, v in values.items()},
                         expected={label: row["expected"] for label, row in rows.items()}, lossy=lossy)
        metrics = [m for m in metrics if any(np.any(~np.isnan(v[m])) for v in values.values())
                   and (m != "test/unk_rate" or lossy)] or [primary]
        throughput = next((m for m in ("train/tokens_per_s", "train/examples_per_s")
                           if any(np.any(~np.isnan(v[m])) for v in values.values())), "train/tokens_per_s")
        # a column with the same value in every row (a task's baseline) says nothing about the rows
        same = {m: constant(values, m) for m in metrics if m != primary}
        same = {m: c for m, c in same.items() if c is not None}
        metrics = [m for m in metrics if m not in same]
        table = {"task": task, "data": data, "primary": primary, "direction": direction, "values": values,
                 "verdict": verdict, "curve_metric": task_class.curve_metric}
        front = fronts(table)
        arrow = "↓" if direction == "min" else "↑"
        header = [" / ".join(axes), *[f"{m} ({arrow})" if m == primary else m for m in metrics],
                  "rank", "Δ vs top [95 % CI]", "g vs top", "Holm p vs top", "converged", "params",
                  throughput.removeprefix("train/").replace("_per_s", "/s"), "s to best", "wall s",
                  "Pareto front", "runs"]
        body = []
        for label, row in rows.items():
            v = values[label]
            on = [name for cost, name in (("time_to_best_s", "time"), ("num_parameters", "params"))
                  if label in front[cost]]
            body.append([("★ " if label == verdict.winner else "") + label + (" †" if label in lossy else ""),
                         *[mean_sd(v[m]) for m in metrics], *versus_top(verdict, label, label in lossy),
                         converged_cell(verdict.converged.get(label)),
                         fmt(mean_or_nan(v["num_parameters"])), fmt(mean_or_nan(v[throughput])),
                         fmt(mean_or_nan(v["time_to_best_s"])), fmt(mean_or_nan(v["wall_time_s"])),
                         ", ".join(on) or "–", f"{len(row['runs'])}/{row['expected']}"])
        text = protocol(items[0].cfg, seeds, tuple(items[0].grid.get("tune") or ()))
        if same:
            text += " Same for every row: " + "; ".join(f"{m} {c}" for m, c in same.items()) + "."
        table.update({"header": header, "rows": body, "runs": {k: r["runs"] for k, r in rows.items()},
                      "protocol": text, "axes": axes, "items": items, "lossy": lossy, "label_of": label_of,
                      "matrix": pairwise_matrix(verdict), "pairs": pairs_table(verdict), "fronts": front})
        tables.append(table)
    return tables


def constant(values: dict[str, dict], metric: str) -> str | None:
    """The value of ``metric`` when every row with runs has that same value in every run (to the
    printed digits), else None."""
    shown = set()
    for v in values.values():
        runs = v[metric][~np.isnan(v[metric])]
        if not len(runs):
            continue
        if len({fmt(float(x)) for x in runs}) > 1:
            return None
        shown.add(fmt(float(runs[0])))
    return shown.pop() if len(shown) == 1 else None


def converged_cell(counts: tuple[int, int] | None) -> str:
    """"4/4" (runs that converged / runs with the flag), "n/a" (not trained by gradient), "–" (not checked)."""
    if counts is None:
        return "n/a"
    return f"{counts[0]}/{counts[1]}" if counts[1] else "–"


def versus_top(verdict: Verdict, label: str, lossy: bool) -> list[str]:
    """rank, Δ = row − top [95 % CI], Hedges' g, Holm p (the table's cells for one row)."""
    if lossy:
        return ["not ranked †", "not comparable †", "–", "–"]
    if label not in verdict.ranking:
        return ["–", "–", "–", "–"]
    rank = str(verdict.ranking.index(label) + 1)
    top = verdict.ranking[0]
    if label == top:
        return [rank, "top", "–", "–"]
    c = lookup(verdict.comparisons, label, top)
    ci = "" if np.isnan(c.ci[0]) else f" [{fmt_signed(c.ci[0])}, {fmt_signed(c.ci[1])}]"
    return [rank, fmt_signed(c.diff) + ci, "–" if np.isnan(c.g) else f"{c.g:+.2f}", fmt_p(c.p_holm)]


def pairwise_matrix(verdict: Verdict) -> tuple[list[str], list[list[str]]] | None:
    """Ranked rows × ranked rows: the Holm-adjusted p of each pair, bold when < alpha."""
    if len(verdict.ranking) < 2:
        return None
    rows = []
    for a in verdict.ranking:
        cells = []
        for b in verdict.ranking:
            p = float("nan") if a == b else lookup(verdict.comparisons, a, b).p_holm
            cells.append("·" if a == b else f"**{fmt_p(p)}**" if p < verdict.alpha else fmt_p(p))
        rows.append([a, *cells])
    return ["Holm p", *verdict.ranking], rows


def pairs_table(verdict: Verdict) -> tuple[list[str], list[list[str]]] | None:
    """Every pair of ranked rows, better mean first: Δ with its Welch 95 % CI, Hedges' g, p, Holm p."""
    if len(verdict.ranking) < 2:
        return None
    header = ["pair (better mean first)", "Δ = a − b", "95 % CI of Δ", "Hedges g", "Welch p", "Holm p"]
    rows = []
    for i, a in enumerate(verdict.ranking):
        for b in verdict.ranking[i + 1:]:
            c = lookup(verdict.comparisons, a, b)
            p = fmt_p(c.p_holm)
            rows.append([f"{a} vs {b}", fmt_signed(c.diff),
                         "–" if np.isnan(c.ci[0]) else f"[{fmt_signed(c.ci[0])}, {fmt_signed(c.ci[1])}]",
                         "–" if np.isnan(c.g) else f"{c.g:+.2f}", fmt_p(c.p),
                         f"**{p}**" if c.significant(verdict.alpha) else p])
    return header, rows
