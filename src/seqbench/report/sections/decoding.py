"""The report of a ``kind: decoding`` study: per dataset, rows = strategies, metrics mean ± sd over
the decoded source runs (cells × seeds), and a quality-vs-diversity plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqbench.report.plots import pyplot
from seqbench.report.render import image, md_table, write
from seqbench.report.runs import finished
from seqbench.report.statistics import mean_sd

DECODING_METRICS = [("nll_per_char", "↓ quality"), ("grammatical_rate", "↑ quality"), ("distinct_2", "↑ diversity"),
                    ("repetition_4", "↓ repetition"), ("self_bleu", "↓ cross-sample similarity"),
                    ("copy_4", "copying of training 4-grams"), ("tokens_per_s", "speed")]


def plot_quality_diversity(data: str, points: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for strat, (x, y) in points.items():
        ax.scatter(x, y)
        ax.annotate(strat, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("distinct-2 (diversity →)")
    ax.set_ylabel("NLL per char under the model (↓ quality)")
    ax.set_title(f"{data}: decoding quality vs diversity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def decoding_report(study: dict, tracker, out_dir: Path) -> dict:
    """Tables and plots of the decode runs of ``study``, written to ``out_dir``."""
    import mlflow

    out_dir.mkdir(parents=True, exist_ok=True)
    runs = mlflow.search_runs([tracker.experiment_id], filter_string=(
        f"tags.study = '{study['name']}' and tags.task = 'decode'"))
    done = finished(runs)
    from seqbench.report.answer import smoke_banner

    md = [f"# seqbench report: {study['name']}", "", *smoke_banner(study), study.get("description", ""), "",
          f"{len(done)} decoded models from study `{study['source_study']}`; "
          f"{len(runs) - len(done)} decode runs not finished.", ""]
    images = []
    for data, group in (done.groupby("tags.data") if len(done) else []):
        strategies = sorted({s for d in group["tags.decoding"] for s in d.split(",")})
        header = ["strategy", *[f"{m} ({what})" for m, what in DECODING_METRICS]]
        rows, points = [], {}
        for strat in strategies:
            cols = {m: np.array(group.get(f"metrics.{strat}/{m}", pd.Series(dtype=float)), dtype=float)
                    for m, _ in DECODING_METRICS}
            rows.append([strat, *[mean_sd(cols[m]) for m, _ in DECODING_METRICS]])
            points[strat] = (np.nanmean(cols["distinct_2"]), np.nanmean(cols["nll_per_char"]))
        models = ", ".join(sorted(set(group["tags.model"])))
        proto = (f"data **{data}**; models: {models} ({len(group)} trained runs, every seed); samples and "
                 f"lengths as in each decode run's params; n-grams over words of the continuations; "
                 f"NLL/char under the generating model.")
        md += [f"## {data}", "", f"Protocol: {proto}", "", md_table(header, rows), ""]
        png = out_dir / f"quality_diversity_{data}.png"
        plot_quality_diversity(data, points, png)
        images.append(png)
        md += image(png, "quality vs diversity")
    failed = runs[runs["status"] != "FINISHED"] if len(runs) else runs
    md += ["## Failed runs", ""]
    if len(failed):
        rows = [[r["tags.mlflow.runName"], r["status"], r["run_id"], str(r.get("tags.failure_reason", ""))]
                for _, r in failed.iterrows()]
        md.append(md_table(["run", "status", "run id", "reason"], rows))
    else:
        md.append("None.")
    write(out_dir, md, f"seqbench report {study['name']}")
    return {"images": images, "dir": out_dir}
