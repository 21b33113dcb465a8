"""``python -m seqbench.report <study>``: MLflow runs -> comparison tables, plots, md + html.

The study file (``pipelines/<study>.yaml``) says which configurations were asked for; each is
composed with Hydra and looked up in MLflow by its config hash, so a missing or failed run is
listed, never silently dropped. Tables: one per (task, data); rows = the configurations that vary
(cell, tokenizer, decoding, ...); columns = metric mean ± sd over seeds (n), parameters,
tokens/s and wall time; the best row is marked and every other row gets a Welch t-test against it.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from seqbench import report_longrange
from seqbench.errors import ConfigError
from seqbench.protocol import protocol
from seqbench.study import Expected, expected_runs, load_study, study_tracker
from seqbench.tracking import Tracker, run_name

SECONDARY = {"lm": ["test/perplexity", "val/best_loss", "test/unk_rate", "sample/grammatical_rate", "test/agreement_acc"],
             "classify": ["test/f1_macro", "val/accuracy"],
             "adding": ["test/mse_ratio", "test/baseline_mse"],
             "copy": ["test/loss", "test/baseline_loss", "test/baseline_recall_accuracy"]}
#: cost columns; throughput is tokens/s for token-stream tasks, examples/s for the others
COST = ["num_parameters", "train/tokens_per_s", "train/examples_per_s", "wall_time_s"]
ROW_AXES = ("model", "tokenizer", "embedding", "decoding")


def fetch_runs(tracker: Tracker, hashes: list[str], study: str) -> pd.DataFrame:
    """Runs tagged with the study, or carrying any expected config hash (``mlflow.search_runs``;
    MLflow's filter language has no IN for tags, so the hash match is done here)."""
    import mlflow

    df = mlflow.search_runs([tracker.experiment_id], filter_string="tags.task != 'study'")  # not the parent
    if not len(df):
        return pd.DataFrame(columns=["run_id", "status", "tags.config_hash", "tags.study"])
    for col in ("tags.study", "tags.config_hash"):
        if col not in df:
            df[col] = None
    return df[(df["tags.study"] == study) | df["tags.config_hash"].isin(set(hashes))]


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    a = abs(x)
    return f"{x:,.0f}" if a >= 1000 else f"{x:.4f}" if a < 10 else f"{x:.2f}"


def mean_sd(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "–"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{fmt(values.mean())} ± {fmt(sd)} (n={len(values)})"


def mean_or_nan(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value; nan when either side has < 2 runs or no variance."""
    from scipy import stats

    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def row_label(cfg: DictConfig, axes: list[str]) -> str:
    return " / ".join(f"{cfg[a].name}" for a in axes) if axes else cfg.model.name


def build_tables(expected: list[Expected], runs: pd.DataFrame, seeds: list) -> list[dict]:
    """One table per (task, data) over the FINISHED runs matching the expected hashes."""
    finished = runs[runs["status"] == "FINISHED"] if len(runs) else runs
    by_hash = {h: g for h, g in finished.groupby("tags.config_hash")} if len(finished) else {}
    groups: dict[tuple, list[Expected]] = {}
    for e in expected:
        groups.setdefault((e.cfg.task.name, e.cfg.data.name), []).append(e)
    tables = []
    for (task, data), items in groups.items():
        axes = [a for a in ROW_AXES if len({str(e.cfg[a].name) for e in items}) > 1] or ["model"]
        # a row label covering several settings (data.length, clipping, ...) names them: never averaged
        labels = report_longrange.distinct_labels(items, lambda e, axes=axes: row_label(e.cfg, axes))
        label_of = lambda e, labels=labels: labels[e.hash]
        primary, direction = get_class(items[0].cfg.task._target_).primary_metric  # the task says
        metrics = [primary, *[m for m in SECONDARY.get(task, []) ]]
        rows: dict[str, dict] = {}
        for e in items:
            label = label_of(e)
            row = rows.setdefault(label, {"runs": [], "expected": 0})
            row["expected"] += 1
            if e.hash in by_hash:
                row["runs"].append(by_hash[e.hash].iloc[0])
        values = {label: {m: np.array([float(r.get(f"metrics.{m}", np.nan)) for r in row["runs"]])
                          for m in metrics + COST} for label, row in rows.items()}
        means = {label: mean_or_nan(v[primary]) for label, v in values.items()}
        # a vocabulary with <unk> scores every unknown word as one token: its bits/char leave out
        # the cost of spelling those words, a lower bound no lossless tokenizer can be compared to
        lossy = {label for label, v in values.items() if "test/unk_rate" in v and mean_or_nan(v["test/unk_rate"]) > 0}
        scored = {k: m for k, m in means.items() if not np.isnan(m) and k not in lossy}
        best = (min if direction == "min" else max)(scored, key=scored.get) if scored else None
        metrics = [m for m in metrics if any(np.any(~np.isnan(v[m])) for v in values.values())
                   and (m != "test/unk_rate" or lossy)] or [primary]
        throughput = next((m for m in ("train/tokens_per_s", "train/examples_per_s")
                           if any(np.any(~np.isnan(v[m])) for v in values.values())), "train/tokens_per_s")
        header = [" / ".join(axes), *[f"{m} ({'↓' if m == primary and direction == 'min' else '↑' if m == primary else ''})".replace(" ()", "") for m in metrics],
                  f"p vs best ({primary})", "params", throughput.removeprefix("train/").replace("_per_s", "/s"),
                  "wall s", "runs"]
        body = []
        for label, row in rows.items():
            v = values[label]
            p = welch_p(v[primary], values[best][primary]) if best and label != best else float("nan")
            body.append([("★ " if label == best else "") + label + (" †" if label in lossy else ""),
                         *[mean_sd(v[m]) for m in metrics],
                         "best" if label == best else "not comparable †" if label in lossy else fmt(p), fmt(mean_or_nan(v["num_parameters"])),
                         fmt(mean_or_nan(v[throughput])), fmt(mean_or_nan(v["wall_time_s"])),
                         f"{len(row['runs'])}/{row['expected']}"])
        tables.append({"task": task, "data": data, "header": header, "rows": body, "primary": primary,
                       "values": values,
                       "protocol": protocol(items[0].cfg, seeds), "axes": axes, "items": items, "lossy": lossy,
                       "label_of": label_of})
    return tables


def problems(expected: list[Expected], runs: pd.DataFrame) -> list[list[str]]:
    """Expected configurations without a FINISHED run: failed (with reason), running, or missing."""
    out = []
    for e in expected:
        mine = runs[runs["tags.config_hash"] == e.hash] if len(runs) else runs
        if len(mine) and (mine["status"] == "FINISHED").any():
            continue
        if len(mine):
            r = mine.iloc[0]
            reason = r.get("tags.failure_reason") if isinstance(r.get("tags.failure_reason"), str) else ""
            out.append([run_name(e.cfg), r["status"], r["run_id"], reason])
        else:
            out.append([run_name(e.cfg), "MISSING", "–", "no run with config_hash " + e.hash])
    return out


def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def plot_curves(tracker: Tracker, table: dict, runs: pd.DataFrame, path: Path, metric: str) -> bool:
    """Validation curve per row (mean over seeds, by epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = runs[runs["status"] == "FINISHED"] if len(runs) else runs
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for label in dict.fromkeys(table["label_of"](e) for e in table["items"]):
        curves = []
        for e in table["items"]:
            if table["label_of"](e) != label:
                continue
            match = finished[finished["tags.config_hash"] == e.hash]
            if len(match):
                hist = tracker.client.get_metric_history(match.iloc[0]["run_id"], metric)
                curves.append([m.value for m in sorted(hist, key=lambda m: m.step)])
        curves = [c for c in curves if c]
        if curves:
            n = min(map(len, curves))
            ax.plot(range(1, n + 1), np.mean([c[:n] for c in curves], axis=0), marker="o", label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("validation check (epoch)")
    ax.set_ylabel(metric)
    ax.set_title(f"{table['task']} / {table['data']}: {metric} (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_primary(table: dict, values: dict, path: Path) -> bool:
    """Bar chart of the primary metric per row: mean with ± sd error bars (e.g. bits/char by tokenizer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = table["primary"]
    labels = [k for k, v in values.items() if np.any(~np.isnan(v[primary]))]
    if not labels:
        return False
    means = [mean_or_nan(values[k][primary]) for k in labels]
    sds = [np.nanstd(values[k][primary], ddof=1) if np.sum(~np.isnan(values[k][primary])) > 1 else 0 for k in labels]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(labels) + 2), 3.4))
    ax.bar(range(len(labels)), means, yerr=sds, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(primary)
    ax.set_title(f"{table['task']} / {table['data']}: {primary} (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


CURVE_METRIC = {"lm": "val/bits_per_char", "classify": "val/accuracy"}


def write_report(study: dict, expected: list[Expected], runs: pd.DataFrame, tracker: Tracker,
                 out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = study.get("seeds", [0])
    tables = build_tables(expected, runs, seeds)
    issues = problems(expected, runs)
    md = [f"# seqbench report: {study['name']}", "", study.get("description", ""), "",
          f"{len(expected)} configurations expected; "
          f"{len(expected) - len(issues)} finished; {len(issues)} failed or missing.", ""]
    body_html = [f"<h1>seqbench report: {html.escape(study['name'])}</h1>",
                 f"<p>{html.escape(study.get('description', ''))}</p>", f"<p>{html.escape(md[4])}</p>"]
    images = []
    for i, t in enumerate(tables):
        title = f"{t['task']} / {t['data']}"
        md += [f"## {title}", "", f"Protocol: {t['protocol']}", "", md_table(t["header"], t["rows"]), "",
               "★ best mean; p: two-sided Welch t-test against the best row (– when n < 2)."
               + (" † the vocabulary maps unseen words to <unk> (test/unk_rate > 0): each is scored as one "
                  "token, so the spelling of out-of-vocabulary words is not paid for and bits/char is a lower "
                  "bound, not comparable with the lossless tokenizers; such rows are never marked best."
                  if t["lossy"] else ""), ""]
        body_html += [f"<h2>{html.escape(title)}</h2>", f"<p><b>Protocol:</b> {html.escape(t['protocol'])}</p>",
                      html_table(t["header"], t["rows"])]
        metric = CURVE_METRIC.get(t["task"], "val/loss")
        plots = [(out_dir / f"bars_{i}_{t['task']}_{t['data']}.png", f"{t['primary']} by row",
                  lambda png: plot_primary(t, t["values"], png)),
                 (out_dir / f"curves_{i}_{t['task']}_{t['data']}.png", f"{metric} curves",
                  lambda png: plot_curves(tracker, t, runs, png, metric))]
        for png, alt, draw in plots:
            if draw(png):
                images.append(png)
                md += [f"![{alt}]({png.name})", ""]
                data = base64.b64encode(png.read_bytes()).decode()
                body_html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
    if report_longrange.applies(expected):  # studies with adding/copy runs: metric vs length, gradient flow
        extra = report_longrange.section(expected, runs, tracker, out_dir, md_table, html_table)
        md += extra["md"]
        body_html += extra["html"]
        images += extra["images"]
    md += ["## Failed or missing runs", ""]
    body_html.append("<h2>Failed or missing runs</h2>")
    if issues:
        header = ["run", "status", "run id", "reason"]
        md.append(md_table(header, issues))
        body_html.append(html_table(header, issues))
    else:
        md.append("None: every expected configuration has a FINISHED run.")
        body_html.append("<p>None: every expected configuration has a FINISHED run.</p>")
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}")
    (out_dir / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                         f"seqbench report {html.escape(study['name'])}</title><style>{style}"
                                         f"</style></head><body>{''.join(body_html)}</body></html>\n")
    return {"tables": tables, "problems": issues, "images": images, "dir": out_dir}


DECODING_METRICS = [("nll_per_char", "↓ quality"), ("grammatical_rate", "↑ quality"), ("distinct_2", "↑ diversity"),
                    ("repetition_4", "↓ repetition"), ("self_bleu", "↓ cross-sample similarity"),
                    ("copy_4", "copying of training 4-grams"), ("tokens_per_s", "speed")]


def decoding_report(study: dict, tracker: Tracker, out_dir: Path) -> dict:
    """``kind: decoding`` studies: per dataset, rows = strategies, metrics mean ± sd over the
    decoded source runs (cells x seeds), and a quality-vs-diversity plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    out_dir.mkdir(parents=True, exist_ok=True)
    runs = mlflow.search_runs([tracker.experiment_id], filter_string=(
        f"tags.study = '{study['name']}' and tags.task = 'decode'"))
    finished = runs[runs["status"] == "FINISHED"] if len(runs) else runs
    md = [f"# seqbench report: {study['name']}", "", study.get("description", ""), "",
          f"{len(finished)} decoded models from study `{study['source_study']}`; "
          f"{len(runs) - len(finished)} decode runs not finished.", ""]
    body = [f"<h1>seqbench report: {html.escape(study['name'])}</h1>", f"<p>{html.escape(md[4])}</p>"]
    images = []
    for data, group in (finished.groupby("tags.data") if len(finished) else []):
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
        body += [f"<h2>{html.escape(data)}</h2>", f"<p><b>Protocol:</b> {html.escape(proto)}</p>",
                 html_table(header, rows)]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for strat, (x, y) in points.items():
            ax.scatter(x, y)
            ax.annotate(strat, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("distinct-2 (diversity →)")
        ax.set_ylabel("NLL per char under the model (↓ quality)")
        ax.set_title(f"{data}: decoding quality vs diversity")
        fig.tight_layout()
        png = out_dir / f"quality_diversity_{data}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        images.append(png)
        md += [f"![quality vs diversity]({png.name})", ""]
        body.append(f'<img alt="quality vs diversity" src="data:image/png;base64,'
                    f'{base64.b64encode(png.read_bytes()).decode()}">')
    failed = runs[runs["status"] != "FINISHED"] if len(runs) else runs
    md += ["## Failed runs", ""]
    if len(failed):
        rows = [[r["tags.mlflow.runName"], r["status"], r["run_id"], str(r.get("tags.failure_reason", ""))]
                for _, r in failed.iterrows()]
        md.append(md_table(["run", "status", "run id", "reason"], rows))
        body.append(html_table(["run", "status", "run id", "reason"], rows))
    else:
        md.append("None.")
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    (out_dir / "report.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>seqbench report"
                                         f"</title></head><body>{''.join(body)}</body></html>\n")
    return {"images": images, "dir": out_dir}


def log_report(tracker: Tracker, study: dict, result: dict) -> str:
    """Log the report as artifacts (``report/``) of the study's parent run; return its id."""
    parent = tracker.study_run(study["name"], study.get("description", ""))
    for name in ["report.md", "report.html", *(p.name for p in result["images"])]:
        tracker.client.log_artifact(parent, str(result["dir"] / name), "report")
    return parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqbench.report", description=__doc__.split("\n")[0])
    parser.add_argument("study")
    parser.add_argument("--out", default=None, help="output folder (default reports/<study>)")
    parser.add_argument("overrides", nargs="*", help="the sweep's extra overrides, and logger.* settings")
    args = parser.parse_intermixed_args(argv)
    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    try:
        study = load_study(args.study)
        tracking = [o for o in args.overrides if o.startswith(("logger", "paths"))]
        grid_extra = [o for o in args.overrides if o not in tracking]
        tracker = study_tracker(root, study["name"], tracking)
        if tracker is None:
            raise ConfigError("a report reads MLflow: logger=none has nothing to report")
        expected = [] if study.get("kind") == "decoding" else expected_runs(study, root, grid_extra)
    except ConfigError as e:
        print(f"seqbench.report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(root) / "reports" / study["name"]
    if study.get("kind") == "decoding":
        result = decoding_report(study, tracker, out)
    else:
        runs = fetch_runs(tracker, [e.hash for e in expected], study["name"])
        result = write_report(study, expected, runs, tracker, out)
    run_id = log_report(tracker, study, result)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}  {out / 'report.html'}  (MLflow: artifacts report/ of the study's "
          f"parent run {run_id}, experiment {tracker.experiment!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
