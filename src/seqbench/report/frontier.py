"""Quality against cost: which row to use depends on both. A row is on the Pareto front of a cost
when no other row is at least as good in the metric and at least as cheap, and strictly better in
one of the two (Pareto 1906; the "non-dominated set" of multi-objective optimisation). Two costs:
seconds of training to the checkpoint tested (``time_to_best_s``) and parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqbench.report.statistics import mean_or_nan

#: cost metrics of a run, as the front and the plot name them
COSTS = {"time_to_best_s": "training seconds to the checkpoint tested", "num_parameters": "parameters"}


def pareto_front(points: dict[str, tuple[float, float]], direction: str) -> list[str]:
    """The rows not dominated by another: ``points`` maps row -> (quality, cost), ``direction``
    says whether lower ("min") or higher ("max") quality is better; a lower cost is always better.
    Rows with a nan coordinate are left out. Sorted by cost."""
    sign = 1.0 if direction == "min" else -1.0
    valid = {k: (sign * q, c) for k, (q, c) in points.items() if not (np.isnan(q) or np.isnan(c))}

    def dominated(k: str) -> bool:
        q, c = valid[k]
        return any(q2 <= q and c2 <= c and (q2 < q or c2 < c) for j, (q2, c2) in valid.items() if j != k)

    return sorted((k for k in valid if not dominated(k)), key=lambda k: valid[k][1])


def fronts(table: dict) -> dict[str, list[str]]:
    """Cost metric -> the rows of a report table on its front (means over seeds; ranked rows only,
    so a lossy † row is never on it)."""
    primary, ranking = table["primary"], table["verdict"].ranking
    out = {}
    for cost in COSTS:
        points = {k: (mean_or_nan(table["values"][k][primary]), mean_or_nan(table["values"][k].get(cost, [])))
                  for k in ranking}
        out[cost] = pareto_front(points, table["direction"])
    return out


def plot_frontier(table: dict, path: Path) -> bool:
    """One panel per cost: each row's mean metric against its mean cost (log scale), the runs as
    small dots, the front joined by a line and its rows labelled in bold."""
    from seqbench.report.plots import pyplot

    primary = table["primary"]
    front = table.get("fronts") or fronts(table)
    rows = [k for k in table["verdict"].ranking]
    panels = [c for c in COSTS if any(not np.isnan(mean_or_nan(table["values"][k].get(c, []))) for k in rows)]
    if not rows or not panels:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, cost in zip(axes[0], panels):
        for i, k in enumerate(rows):
            v = table["values"][k]
            x, y = mean_or_nan(v.get(cost, [])), mean_or_nan(v[primary])
            if np.isnan(x) or np.isnan(y):
                continue
            on = k in front[cost]
            ax.scatter(v.get(cost, []), v[primary], s=8, color=f"C{i % 10}", alpha=0.4)
            ax.scatter([x], [y], s=60 if on else 30, color=f"C{i % 10}", edgecolor="black" if on else "none", zorder=3)
            ax.annotate(k, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        fontweight="bold" if on else "normal")
        line = [(mean_or_nan(table["values"][k][cost]), mean_or_nan(table["values"][k][primary])) for k in front[cost]]
        if len(line) > 1:
            ax.plot(*zip(*line), color="black", linewidth=0.8, linestyle="--", zorder=1, label="Pareto front")
            ax.legend(fontsize=7, loc="best")
        xs = [mean_or_nan(table["values"][k].get(cost, [])) for k in rows]
        xs = [x for x in xs if not np.isnan(x) and x > 0]
        wide = bool(xs) and max(xs) > 3 * min(xs)        # a log axis only where the costs span a range
        if wide:
            ax.set_xscale("log")
        ax.set_xlabel(COSTS[cost] + (" (log)" if wide else ""), fontsize=8)
        ax.set_ylabel(f"{primary} ({'lower' if table['direction'] == 'min' else 'higher'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{table['task']} / {table['data']}: quality against cost (bold: on the front)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
