"""A recipe's rows: one per grid point, its FINISHED runs' metric against the published figure.

    mean ± sd over n runs (seeds, and a grid's ``replicates`` such as MR's folds), the 95 % CI of
    the mean (Student t, n - 1 degrees of freedom), Δ = mean - published, and the goal test:

        at_most v:  mean <= v        at_least v:  mean >= v        within r:  |Δ| <= r * published

The goal is decided on the mean over the runs the recipe asks for; a row with fewer FINISHED runs
than expected says so (``n of N``) and is not called met when it has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from seqbench.reproduce.recipe import anchor_of
from seqbench.study import Expected, key_of, point_key


@dataclass
class Row:
    recipe: str
    size: str
    label: str
    anchor: dict
    expected: int
    values: list[float] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    converged: list[float] = field(default_factory=list)
    #: the commits (``git_sha`` tags) and code versions (``code_version``) that made the runs
    commits: set = field(default_factory=set)
    code_versions: set = field(default_factory=set)
    cfg: object = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        """95 % CI of the mean (Student t); NaNs below two runs."""
        if self.n < 2:
            return math.nan, math.nan
        half = stats.t.ppf(0.975, self.n - 1) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def delta(self) -> float:
        published = self.anchor.get("published")
        return self.mean - float(published) if published is not None else math.nan

    @property
    def met(self) -> bool | None:
        if not self.values or self.anchor.get("goal") is None:
            return None
        return goal_met(self.anchor["goal"], self.mean, self.anchor.get("published"))


def goal_met(goal: dict, mean: float, published: float | None = None) -> bool:
    """Whether ``mean`` meets ``goal`` ({at_most: v} | {at_least: v} | {within: r} of ``published``)."""
    (kind, value), = goal.items()
    if kind == "at_most":
        return mean <= float(value)
    if kind == "at_least":
        return mean >= float(value)
    return abs(mean - float(published)) <= float(value) * abs(float(published))


def goal_text(goal: dict | None, published: float | None = None) -> str:
    if goal is None:
        return "–"
    (kind, value), = goal.items()
    if kind == "within":
        return f"{published:g} ± {float(value):.0%}"
    return f"{'≤' if kind == 'at_most' else '≥'} {float(value):g}"


def row_key(grid: dict, overrides: list[str]) -> str:
    """A row: the grid point without its replicate keys (seeds, folds are pooled)."""
    replicates = set(grid.get("replicates") or [])
    return point_key(grid, [o for o in overrides if key_of(o) not in replicates]).rstrip(": ").rstrip()


def newest_finished(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """config hash -> its newest FINISHED run."""
    if not len(runs):
        return {}
    done = runs[runs["status"] == "FINISHED"].sort_values("start_time", ascending=False)
    return {h: r for h, r in done.groupby("tags.config_hash", sort=False).head(1).set_index("tags.config_hash").iterrows()}


def rows_for(recipe: dict, size: str, expected: list[Expected], runs: pd.DataFrame) -> list[Row]:
    """The recipe's rows at ``size`` from the expected configurations and the runs found."""
    by_hash = newest_finished(runs)
    rows: dict[str, Row] = {}
    for e in expected:
        key = row_key(e.grid, e.overrides)
        anchor = anchor_of(recipe, e.grid, size)
        row = rows.setdefault(key, Row(recipe["name"], size, key, anchor, 0, cfg=e.cfg))
        row.expected += 1
        run = by_hash.get(e.hash)
        metric = f"metrics.{anchor['metric']}"
        if run is None or metric not in run or pd.isna(run[metric]):
            continue
        value = float(run[metric])
        row.values.append((math.exp(value) if anchor.get("transform") == "exp" else value) * float(anchor["scale"]))
        if pd.notna(run.get("metrics.wall_time_s", np.nan)):
            row.wall_times.append(float(run["metrics.wall_time_s"]))
        if pd.notna(run.get("metrics.converged", np.nan)):
            row.converged.append(float(run["metrics.converged"]))
        for tag, found in (("tags.git_sha", row.commits), ("tags.code_version", row.code_versions)):
            if isinstance(run.get(tag), str):
                found.add(run[tag][:10] + ("+dirty" if run[tag].endswith("+dirty") else ""))
    return list(rows.values())
