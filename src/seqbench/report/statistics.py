"""Statistics of a report table: mean ± sd over seeds, a two-sided Welch t-test for every pair of
rows, Holm's correction over the table's pairs, and effect sizes (the mean difference with its
Welch 95 % CI, Hedges' g). scipy and statsmodels do the arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np

#: family-wise error rate of a table's pairwise comparisons (Holm)
ALPHA = 0.05
#: level of the confidence interval of a mean difference
CONFIDENCE = 0.95


def finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[~np.isnan(values)]


def mean_or_nan(values) -> float:
    values = finite(values)
    return float(values.mean()) if len(values) else float("nan")


def sd_or_nan(values) -> float:
    """Sample standard deviation (ddof = 1); nan below 2 values."""
    values = finite(values)
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    a = abs(x)
    return f"{x:,.0f}" if a >= 1000 else f"{x:.4f}" if a < 10 else f"{x:.2f}"


def fmt_signed(x: float) -> str:
    return ("+" if x > 0 else "") + fmt(x)


def fmt_p(p: float) -> str:
    return "–" if p is None or math.isnan(p) else "<0.0001" if p < 1e-4 else f"{p:.4f}"


def mean_sd(values) -> str:
    values = finite(values)
    if len(values) == 0:
        return "–"
    return f"{fmt(values.mean())} ± {fmt(sd_or_nan(values))} (n={len(values)})"


@dataclass(frozen=True)
class Comparison:
    """Row ``a`` against row ``b``: ``diff`` = mean(a) − mean(b) with its Welch CI, Hedges' g of
    the same difference, the two-sided Welch p and the Holm-adjusted p (nan: not testable)."""

    a: str
    b: str
    diff: float
    ci: tuple[float, float]
    g: float
    p: float
    p_holm: float = float("nan")

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_holm < alpha            # nan (untestable) is never significant

    def flipped(self) -> "Comparison":
        """The same comparison as b against a (signs of diff, CI and g reversed)."""
        return replace(self, a=self.b, b=self.a, diff=-self.diff, ci=(-self.ci[1], -self.ci[0]), g=-self.g)


def testable(a, b) -> bool:
    """Welch's test needs n ≥ 2 on each side and some variance."""
    a, b = finite(a), finite(b)
    return len(a) >= 2 and len(b) >= 2 and (a.std() > 0 or b.std() > 0)


def welch(a, b, confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float], float]:
    """mean(a) − mean(b), its CI (t with the Welch–Satterthwaite df) and the two-sided Welch
    p-value (``scipy.stats.ttest_ind(equal_var=False)``); CI and p nan when not :func:`testable`."""
    from scipy import stats

    a, b = finite(a), finite(b)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if not testable(a, b):
        return diff, (float("nan"), float("nan")), float("nan")
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return diff, (float(ci.low), float(ci.high)), float(res.pvalue)


def hedges_g(a, b) -> float:
    """Hedges' g of mean(a) − mean(b): the difference over the pooled sd, times the small-sample
    correction J = 1 − 3 / (4 (n_a + n_b) − 9) (statsmodels' ``effectsize_smd``); nan with < 2
    values a side or a pooled sd of 0."""
    from statsmodels.stats.meta_analysis import effectsize_smd

    a, b = finite(a), finite(b)
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    g, _ = effectsize_smd(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    return float(g)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (statsmodels ``multipletests(method="holm")``) over the finite
    p-values: with p_(1) ≤ … ≤ p_(m), adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    nan (an untestable pair) stays nan and does not count in m."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
    return out


def compare(values: dict[str, np.ndarray], labels: list[str] | None = None) -> dict[tuple[str, str], Comparison]:
    """Every pair (a, b) of ``labels`` (a listed first): Welch test, CI, Hedges' g, and the p-value
    Holm-adjusted over all the pairs (the family is the table's testable pairs)."""
    labels = list(values) if labels is None else labels
    pairs = []
    for a, b in combinations(labels, 2):
        diff, ci, p = welch(values[a], values[b])
        pairs.append(Comparison(a, b, diff, ci, hedges_g(values[a], values[b]), p))
    adjusted = holm([c.p for c in pairs])
    return {(c.a, c.b): replace(c, p_holm=float(q)) for c, q in zip(pairs, adjusted)}


def lookup(comparisons: dict[tuple[str, str], Comparison], a: str, b: str) -> Comparison:
    """The comparison of a against b, whichever order it was computed in."""
    return comparisons[(a, b)] if (a, b) in comparisons else comparisons[(b, a)].flipped()
