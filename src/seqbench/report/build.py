"""The report of a study: per (task, data) its protocol, table, verdict, pairwise comparisons and
plots; the task-specific sections; the failed or missing runs. Written as ``report.md`` and
``report.html`` and logged on the study's parent run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from seqbench.report.answer import answer_section, smoke_banner
from seqbench.report.findings import findings_section, judge_all, load_findings
from seqbench.report.frontier import plot_frontier
from seqbench.report.plots import plot_curves, plot_primary
from seqbench.report.render import image, md_table, write
from seqbench.report.runs import problems
from seqbench.report.sections import sections
from seqbench.report.statistics import ALPHA
from seqbench.report.tables import build_tables
from seqbench.report.tuning import importance_section, tuning_section
from seqbench.report.verdict import CONVERGED_SHARE, plural
from seqbench.study import Expected
from seqbench.tracking import Tracker

LOSSY_NOTE = ("† the vocabulary maps unseen words to <unk> (test/unk_rate > 0): each is scored as one token, "
              "so the spelling of out-of-vocabulary words is not paid for and bits/char is a lower bound, not "
              "comparable with the lossless tokenizers; such rows are never ranked.")


def legend(t: dict) -> str:
    pairs = len(t["verdict"].ranking) * (len(t["verdict"].ranking) - 1) // 2
    return (f"Mean ± sd over seeds (n runs). rank: by mean among comparable rows. Δ vs top: row − top row with "
            f"the Welch 95 % CI; g: Hedges' g of that difference; Holm p: two-sided Welch t-test, "
            f"Holm-adjusted over the {plural(pairs, 'pair')} of this table (– when a side has n < 2). converged: runs "
            f"stopped by early stopping / runs. s to best: seconds of training to the checkpoint tested. Pareto front: "
            f"no other row is as good and cheaper in that cost (time to best, parameters). ★ marks a row only "
            f"when it is significantly better (α = {ALPHA}) than every other comparable row and every row converged "
            f"(≥ {CONVERGED_SHARE:.0%} of its runs)."
            + (" " + LOSSY_NOTE if t["lossy"] else ""))


def table_section(i: int, t: dict, tracker: Tracker, out_dir: Path) -> tuple[list[str], list[Path]]:
    """Markdown of one (task, data) table and the plots it drew."""
    md = [f"## {t['task']} / {t['data']}", "", f"Protocol: {t['protocol']}", "",
          md_table(t["header"], t["rows"]), "", legend(t), "", f"**Verdict.** {t['verdict'].text}", ""]
    if t["matrix"]:
        md += [f"**Pairwise comparisons** of {t['primary']}: Holm-adjusted p of the two-sided Welch t-test "
               f"(bold: < {ALPHA}); – when a side has n < 2.", "", md_table(*t["matrix"]), "",
               "Effect sizes of every pair: Δ = mean(a) − mean(b) with its Welch 95 % CI, Hedges' g, the raw "
               "Welch p and the Holm-adjusted p.", "", md_table(*t["pairs"]), ""]
    images = []
    metric = t["curve_metric"]
    plots = [(out_dir / f"bars_{i}_{t['task']}_{t['data']}.png",
              f"{t['primary']} by row" + (" (lossy † rows left out: not comparable)" if t["lossy"] else ""),
              lambda png: plot_primary(t, png)),
             (out_dir / f"frontier_{i}_{t['task']}_{t['data']}.png", f"{t['primary']} against cost",
              lambda png: plot_frontier(t, png)),
             (out_dir / f"curves_{i}_{t['task']}_{t['data']}.png", f"{metric} curves",
              lambda png: plot_curves(tracker, t, png, metric))]
    for png, alt, draw in plots:
        if draw(png):
            images.append(png)
            md += image(png, alt)
    return md, images


def seed_noise(expected: list[Expected], runs: pd.DataFrame, choice: dict[str, dict]) -> dict[str, float]:
    """Per tuned grid point: the sd over the comparison's seeds of the tuning objective."""
    from seqbench.report.runs import finished
    from seqbench.report.statistics import sd_or_nan
    from seqbench.study import point_key

    done = finished(runs)
    values: dict[str, list[float]] = {}
    for e in expected:
        key = point_key(e.grid, e.overrides) if e.grid.get("tune") else None
        if key not in choice or not len(done):
            continue
        column = f"metrics.{choice[key]['objective']}"
        mine = done[done["tags.config_hash"] == e.hash]
        if len(mine) and column in mine:
            values.setdefault(key, []).append(float(mine.iloc[0][column]))
    return {k: sd_or_nan(v) for k, v in values.items()}


def write_report(study: dict, expected: list[Expected], runs: pd.DataFrame, tracker: Tracker,
                 out_dir: Path, choice: dict[str, dict] | None = None) -> dict:
    """``choice``: the tuned grid points' candidates and chosen settings (``seqbench.study.resolve``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build_tables(expected, runs, study.get("seeds", [0]))
    issues = problems(expected, runs)
    judgements = judge_all(load_findings(study), tables)
    md = [f"# seqbench report: {study['name']}", "", *smoke_banner(study), *answer_section(tables),
          *([study["description"], ""] if study.get("description") else []),
          f"{len(expected)} configurations expected; "
          f"{len(expected) - len(issues)} finished; {len(issues)} failed or missing.", ""]
    images = []
    for i, t in enumerate(tables):
        lines, drawn = table_section(i, t, tracker, out_dir)
        md += lines
        images += drawn
    for section in sections():       # task-specific: long-range (metric vs length, gradient flow), ...
        if section.applies(expected):
            extra = section.section(expected, runs, tracker, out_dir)
            md += extra["md"]
            images += extra["images"]
    md += findings_section(judgements)
    md += tuning_section(study, choice or {}, seed_noise(expected, runs, choice or {}))
    md += importance_section(choice or {})
    md += ["## Failed or missing runs", ""]
    if issues:
        md.append(md_table(["run", "status", "run id", "reason"], issues))
    else:
        md.append("None: every expected configuration has a FINISHED run.")
    write(out_dir, md, f"seqbench report {study['name']}")
    return {"tables": tables, "problems": issues, "images": images, "dir": out_dir, "findings": judgements}


def log_report(tracker: Tracker, study: dict, result: dict) -> str:
    """Log the report as artifacts (``report/``) of the study's parent run; return its id."""
    parent = tracker.study_run(study["name"], study.get("description", ""))
    for name in ["report.md", "report.html", *(p.name for p in result["images"])]:
        tracker.client.log_artifact(parent, str(result["dir"] / name), "report")
    return parent
