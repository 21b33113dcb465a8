"""What the report's long-range section (:mod:`seqbench.report.sections.longrange`) reads from a
dataset's runs: one metric against the length of the dependency the dataset varies. A dataset
class declares it as ``long_range = LengthBenchmark(...)``; nothing else lists the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class LengthBenchmark:
    """A long-range benchmark: ``metric`` against the config key ``x`` (None: the distances are in
    the metric names, ``<metric><d>``), beside the trivial ``baseline`` a trained row must beat:
    the run's own logged ``baseline_metric``, else ``chance(cfg)``."""

    name: str
    x: str | None
    x_label: str
    metric: str
    lower_is_better: bool
    baseline_metric: str | None = None
    chance: Callable[[DictConfig], float] | None = None

    def baseline(self, cfg: DictConfig, metrics: dict) -> float:
        if self.baseline_metric is not None:
            return metrics.get(self.baseline_metric, math.nan)
        return self.chance(cfg) if self.chance is not None else math.nan
