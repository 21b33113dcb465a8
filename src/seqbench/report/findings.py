"""Published findings, checked against a study's tables.

A study's findings are data: ``pipelines/findings/<name>.yaml`` (``findings: <name>`` in a study
file points elsewhere, e.g. a quick twin to its full study's, or ``findings: /path/file.yaml``). Each finding is one claim about two
rows of a table::

    - claim: CIFG performs as well as the vanilla LSTM
      citation: Greff et al. 2017, "LSTM: A Search Space Odyssey", IEEE TNNLS 28(10)
      relation: equal            # better | not_worse | equal: how row a stands to row b
      rows: [cifg, lstm]         # labels as the report's rows name them
      tables: [copy/copy]        # optional: "task/data" of the tables it applies to (default: every
                                 # table with both rows)
      margin: 0.02               # optional: what counts as no material difference, relative to
                                 # |mean(b)| (default 0.02)
      published: ...             # optional: the paper's own figures
      if_disagrees: ...          # optional: the likely reason, should this study disagree

The verdict on a table is decided by the same statistics as the table's own verdict: the Welch 95 %
CI of Δ = mean(a) − mean(b) and the two-sided Welch p, Holm-adjusted over the table's pairs, with
"better" meaning lower for a "min" metric and higher for a "max" one. With m = margin × |mean(b)|:

* ``better`` (a beats b): **agrees** when a is better and Holm p < α; **disagrees** when b is
  better and Holm p < α, or when the whole CI lies within ±m (no material difference);
* ``not_worse`` (a is no worse than b; non-inferiority): **agrees** when the CI excludes a being
  worse by more than m; **disagrees** when a is worse and Holm p < α;
* ``equal`` (a ≈ b; equivalence, two one-sided tests at 2.5 % each, read off the 95 % CI):
  **agrees** when the whole CI lies within ±m; **disagrees** when Holm p < α and |Δ| > m;
* otherwise, or with fewer than 2 runs a side: **can't tell**.
A verdict on rows that did not converge is said "at this budget", and a disagreement comes with
its likely reason: unconverged runs first, too few seeds next, else the finding's ``if_disagrees``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from seqbench.errors import ConfigError
from seqbench.report.statistics import finite, fmt, fmt_p, fmt_signed, lookup
from seqbench.report.verdict import CONVERGED_SHARE, MIN_SEEDS, all_converged

AGREES, DISAGREES, CANT_TELL = "agrees", "disagrees", "can't tell"
RELATIONS = ("better", "not_worse", "equal")
FINDINGS_DIR = Path(__file__).resolve().parents[3] / "pipelines" / "findings"


@dataclass(frozen=True)
class Finding:
    claim: str
    citation: str
    relation: str
    rows: tuple[str, str]
    tables: tuple[str, ...] = ()
    margin: float = 0.02
    published: str = ""
    if_disagrees: str = ""


@dataclass(frozen=True)
class Judgement:
    finding: Finding
    table: str                   # "task/data", or "" when no table has both rows
    verdict: str                 # AGREES, DISAGREES, CANT_TELL, or "not tested"
    evidence: str                # the Δ, its CI and the Holm p that decide
    note: str = ""               # "at this budget", the likely reason of a disagreement


def load_findings(study: dict, directory: Path = FINDINGS_DIR) -> list[Finding]:
    """The findings of ``study`` (``findings:`` names the file, default the study's name); none
    when there is no such file. A malformed finding is one ConfigError line."""
    name = str(study.get("findings", study["name"]))
    path = Path(name) if name.endswith(".yaml") else directory / f"{name}.yaml"
    if not path.is_file():
        return []
    try:
        entries = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    out = []
    for i, raw in enumerate(entries):
        if raw.get("relation") not in RELATIONS or len(raw.get("rows") or []) != 2:
            raise ConfigError(f"{path.name}, finding {i + 1}: relation must be one of {', '.join(RELATIONS)} "
                              f"and rows two row labels, not {raw.get('relation')!r} / {raw.get('rows')!r}")
        out.append(Finding(raw["claim"], raw["citation"], raw["relation"], tuple(raw["rows"]),
                           tuple(raw.get("tables") or ()), float(raw.get("margin", 0.02)),
                           raw.get("published", ""), raw.get("if_disagrees", "")))
    return out


def judge(finding: Finding, table: dict) -> Judgement:
    """The verdict of one table on one finding (both rows must be in the table's ranking)."""
    v = table["verdict"]
    a, b = finding.rows
    name = f"{table['task']}/{table['data']}"
    c = lookup(v.comparisons, a, b)
    sign = 1.0 if v.direction == "min" else -1.0
    m = finding.margin * abs(v.means[b])
    lo, hi = c.ci
    evidence = (f"Δ = {a} − {b} = {fmt_signed(c.diff)}" + ("" if math.isnan(lo) else f", 95 % CI [{fmt_signed(lo)}, "
                f"{fmt_signed(hi)}]") + f", Holm p {fmt_p(c.p_holm)}; margin ±{fmt(m)}")
    if math.isnan(c.p_holm) or math.isnan(lo):
        verdict = CANT_TELL
    else:
        a_better = sign * c.diff < 0
        within = -m <= lo and hi <= m
        worst = max(sign * lo, sign * hi)   # a's largest plausible shortfall (> 0: worse than b)
        if finding.relation == "better":
            verdict = (AGREES if c.significant() and a_better else
                       DISAGREES if (c.significant() and not a_better) or within else CANT_TELL)
        elif finding.relation == "not_worse":
            verdict = AGREES if worst <= m else DISAGREES if c.significant() and not a_better else CANT_TELL
        else:
            verdict = AGREES if within else DISAGREES if c.significant() and abs(c.diff) > m else CANT_TELL
    n = {r: len(finite(table["values"][r][table["primary"]])) for r in (a, b)}
    return Judgement(finding, name, verdict, evidence, note_for(verdict, finding, v, n))


def note_for(verdict: str, finding: Finding, v, n: dict[str, int]) -> str:
    """"at this budget" when a row did not converge; for a disagreement, its likely reason.
    ``n``: the two rows' run counts."""
    rows = list(n)
    short = [r for r in rows if v.converged.get(r) is not None and v.converged[r][1]
             and v.converged[r][0] < CONVERGED_SHARE * v.converged[r][1]]
    unchecked = [r for r in rows if v.converged.get(r) == (0, 0)]
    notes = []
    if not all_converged(v.converged, rows):
        notes.append("at this budget: " + "; ".join(
            [f"{r} converged in {v.converged[r][0]} of {v.converged[r][1]} runs" for r in short]
            + [f"{r} trained for a fixed budget" for r in unchecked]))
    if verdict == DISAGREES:
        few = [r for r in rows if n[r] < MIN_SEEDS]
        if short or unchecked:
            notes.append("likely reason: the runs stopped before they converged, so this compares learning speed")
        elif few:
            notes.append(f"likely reason: too few seeds ({', '.join(few)})")
        elif finding.if_disagrees:
            notes.append(f"likely reason: {finding.if_disagrees}")
    return "; ".join(notes)


def judge_all(findings: list[Finding], tables: list[dict]) -> list[Judgement]:
    """Every finding against every table it applies to; a finding no table can test is listed as
    "not tested" with the rows it needs."""
    out = []
    for f in findings:
        hits = [t for t in tables if set(f.rows) <= set(t["verdict"].ranking)
                and (not f.tables or f"{t['task']}/{t['data']}" in f.tables)]
        out += [judge(f, t) for t in hits] or [
            Judgement(f, "", "not tested", f"no table of this study has both rows {f.rows[0]} and {f.rows[1]}")]
    return out


def findings_section(judgements: list[Judgement]) -> list[str]:
    """Markdown lines: one table row per finding and table."""
    from seqbench.report.render import md_table

    if not judgements:
        return []
    rows = [[j.finding.claim + (f" (published: {j.finding.published})" if j.finding.published else ""),
             j.finding.citation, j.table or "–", f"**{j.verdict}**" if j.verdict in (AGREES, DISAGREES) else j.verdict,
             j.evidence, j.note or "–"] for j in judgements]
    counts = {k: sum(j.verdict == k for j in judgements) for k in (AGREES, DISAGREES, CANT_TELL)}
    return ["## Published findings", "",
            f"Each finding against each table with its two rows: {counts[AGREES]} agree, {counts[DISAGREES]} disagree, "
            f"{counts[CANT_TELL]} can't tell. Decided by the Welch 95 % CI of Δ and the Holm-adjusted p of the "
            f"table (α = 0.05); the margin is what counts as no material difference "
            f"(`src/seqbench/report/findings.py` gives the rules).", "",
            md_table(["finding", "citation", "table", "this study", "evidence", "note"], rows), ""]
