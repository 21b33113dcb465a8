"""Plots of a report table, drawn to be read at a glance: the primary metric per row on an axis
zoomed to the data (a 0.02 bits/char gap and the error bars stay visible), and validation curves
that show where each run stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqbench.report.statistics import finite, mean_or_nan, sd_or_nan

#: top group (not separable from the top row), rows significantly worse than the top row
COLOURS = {"top": "#4c72b0", "worse": "#a6bddb"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def zoomed_limits(lows: list[float], highs: list[float], margin: float = 0.15) -> tuple[float, float]:
    """From min(mean − sd) to max(mean + sd), widened by ``margin`` of that span on each side (or
    by 5 % of the value when every row is equal): the axis does not start at 0."""
    lo, hi = min(lows), max(highs)
    pad = margin * (hi - lo) if hi > lo else 0.05 * abs(hi) or 1.0
    return lo - pad, hi + pad


def plot_primary(table: dict, path: Path) -> bool:
    """Primary metric per comparable row: mean (bar) ± sd (error bar), each run a dot, the y axis
    zoomed to the data. Colour: the top group, rows significantly worse than the top row. Lossy
    rows † are left out: not comparable, and their lower bound would undo the zoom."""
    from matplotlib.patches import Patch

    primary, verdict = table["primary"], table["verdict"]
    values = {k: finite(v[primary]) for k, v in table["values"].items() if k not in table["lossy"]}
    labels = [k for k, v in values.items() if len(v)]
    if not labels:
        return False
    means = [mean_or_nan(values[k]) for k in labels]
    sds = [0.0 if np.isnan(sd_or_nan(values[k])) else sd_or_nan(values[k]) for k in labels]
    kind = ["top" if k in verdict.top_group else "worse" for k in labels]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(labels) + 2.5), 3.6))
    x = np.arange(len(labels))
    ax.bar(x, means, yerr=sds, capsize=4, color=[COLOURS[k] for k in kind], edgecolor="#333333", linewidth=0.5,
           zorder=2)
    for i, k in enumerate(labels):
        jitter = np.linspace(-0.15, 0.15, len(values[k])) if len(values[k]) > 1 else np.zeros(1)
        ax.scatter(i + jitter, values[k], s=12, color="black", zorder=3)
    ax.set_ylim(*zoomed_limits([m - s for m, s in zip(means, sds)] + [float(v.min()) for v in values.values() if len(v)],
                               [m + s for m, s in zip(means, sds)] + [float(v.max()) for v in values.values() if len(v)]))
    names = [("★ " if k == verdict.winner else "") + k for k in labels]
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{primary} ({'lower' if table['direction'] == 'min' else 'higher'} is better)", fontsize=8)
    ax.set_title(f"{table['task']} / {table['data']}: mean ± sd, dots = runs (y axis not from 0)", fontsize=9)
    legend = {"top": "top group (not separable from the best)", "worse": "significantly worse than the top row"}
    ax.legend(handles=[Patch(facecolor=COLOURS[k], edgecolor="#333333", label=legend[k]) for k in legend if k in kind],
              fontsize=7, loc="best")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def history(tracker, run_id: str, metric: str) -> np.ndarray:
    """A run's metric by validation check (MLflow history sorted by step)."""
    return np.array([m.value for m in sorted(tracker.client.get_metric_history(run_id, metric), key=lambda m: m.step)])


def plot_curves(tracker, table: dict, path: Path, metric: str) -> bool:
    """Validation curve per row: the mean over its runs while every run still trains (solid), each
    run thin, and each run's last validation check marked: ✕ where early stopping fired
    (``converged`` = 1), ○ where the budget ended it (or no early stopping)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    drawn = stopped_early = False
    for i, (label, runs) in enumerate(table["runs"].items()):
        colour = f"C{i % 10}"
        curves = [(history(tracker, r["run_id"], metric), r.get("metrics.converged", np.nan)) for r in runs]
        curves = [(c, conv) for c, conv in curves if len(c)]
        if not curves:
            continue
        n = min(len(c) for c, _ in curves)
        ax.plot(np.arange(1, n + 1), np.mean([c[:n] for c, _ in curves], axis=0), color=colour, linewidth=1.8,
                label=label)
        for c, conv in curves:
            early = not pd.isna(conv) and conv == 1
            stopped_early |= early
            ax.plot(np.arange(1, len(c) + 1), c, color=colour, linewidth=0.7, alpha=0.35)
            ax.plot(len(c), c[-1], marker="X" if early else "o", markersize=7 if early else 5, color=colour,
                    markerfacecolor=colour if early else "white", markeredgecolor=colour, linestyle="none")
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="none",
                          label="last check: budget / no early stopping"))
    if stopped_early:
        handles.append(Line2D([], [], marker="X", color="grey", linestyle="none", label="last check: stopped early"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("validation check (epoch)")
    ax.set_ylabel(metric)
    ax.set_title(f"{table['task']} / {table['data']}: {metric} (mean over seeds; thin: single runs)", fontsize=9)
    ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
