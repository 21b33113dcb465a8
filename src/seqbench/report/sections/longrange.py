"""Long-range section of a study report (appended by :mod:`seqbench.report` to studies with
long-range tasks): where each cell stops beating the trivial baseline as the dependency grows,
and how its gradients decay with the lag.

For every dataset of the study whose class declares a ``long_range`` benchmark
(:class:`seqbench.data.benchmark.LengthBenchmark`):

* a table and a plot of the metric against the dependency length ``x`` (adding: ``data.length``,
  copy: ``data.delay``, counting ones: ``data.length``, agreement: the number of phrases between
  subject and verb) per *variant* (the cell, plus whatever else the study varies besides ``x`` and
  the seed: clipping, recurrent init, optimizer), the baseline's value per ``x``, and the first
  ``x`` at which the variant stops beating the baseline. "Beats" = at least ``BEAT_MARGIN`` (10 %)
  less error than the baseline: mse < 0.9 * baseline_mse, or 1 - acc < 0.9 * (1 - baseline_acc);
* gradient-norm-vs-lag curves per variant (``grad/h_norm`` histories, step = lag), untrained and
  trained, one figure per ``x``;
* where variants differ in clipping: the global gradient norm per training step before clipping
  (``grad/norm``) and after it (``grad/clipped_norm``), with the largest pre-clip norm.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from seqbench.data.benchmark import LengthBenchmark
from seqbench.report.labels import distinct_labels
from seqbench.report.plots import pyplot
from seqbench.report.render import image, md_table

#: a variant beats the baseline with at least this much less error (relative)
BEAT_MARGIN = 0.10


def benchmarks(expected) -> list[tuple[str, LengthBenchmark]]:
    """(data name, its benchmark) for each dataset of the study whose class declares ``long_range``
    (:class:`seqbench.data.benchmark.LengthBenchmark`), in the study's order."""
    from hydra.utils import get_class

    found: dict[str, LengthBenchmark] = {}
    for e in expected:
        bench = getattr(get_class(e.cfg.data._target_), "long_range", None)
        if bench is not None:
            found.setdefault(e.cfg.data.name, bench)
    return list(found.items())


def applies(expected) -> bool:
    """Long-range section only for studies that have runs of a long-range task (adding, copy, ...)."""
    from hydra.utils import get_class

    from seqbench.tasks.longrange import LongRangeTask

    return any(issubclass(get_class(e.cfg.task._target_), LongRangeTask) for e in expected)


def beats(value: float, baseline: float, lower_is_better: bool) -> bool:
    """At least BEAT_MARGIN less error than the baseline (error = the metric, or 1 - accuracy)."""
    if math.isnan(value) or math.isnan(baseline):
        return False
    if lower_is_better:
        return value < (1 - BEAT_MARGIN) * baseline
    return 1 - value < (1 - BEAT_MARGIN) * (1 - baseline)


def stops_beating(xs: list, values: dict, baselines: dict, lower_is_better: bool) -> str:
    """The first x (ascending) at which the variant no longer beats the baseline, in words."""
    measured = [x for x in xs if x in values and not math.isnan(values[x])]
    if not measured:
        return "–"
    for x in measured:
        if not beats(values[x], baselines.get(x, np.nan), lower_is_better):
            return f"{x}" if x != measured[0] else f"≤ {x} (never beats it)"
    return f"> {measured[-1]} (beats it everywhere)"


# -- variants -----------------------------------------------------------------------------------------
def variant_labels(items, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """Variant per config hash: the model name, told apart by its settings where needed."""
    return distinct_labels(items, lambda e: str(e.cfg.model.name), exclude)


# -- data -------------------------------------------------------------------------------------------------
def _finished(runs: pd.DataFrame) -> dict[str, list]:
    if not len(runs):
        return {}
    done = runs[runs["status"] == "FINISHED"]
    return {h: [r for _, r in g.iterrows()] for h, g in done.groupby("tags.config_hash")}


def _metrics_of(row) -> dict[str, float]:
    return {k[len("metrics."):]: float(v) for k, v in row.items()
            if isinstance(k, str) and k.startswith("metrics.") and v is not None and not pd.isna(v)}


def _history(tracker, run_id: str, key: str) -> np.ndarray:
    hist = sorted(tracker.client.get_metric_history(run_id, key), key=lambda m: m.step)
    if not hist:
        return np.array([])
    out = np.full(hist[-1].step + 1, np.nan)
    for m in hist:
        out[m.step] = m.value
    return out


def _mean_curves(curves: list[np.ndarray]) -> np.ndarray:
    curves = [c for c in curves if len(c)]
    if not curves:
        return np.array([])
    n = min(map(len, curves))
    return np.nanmean([c[:n] for c in curves], axis=0)


def collect(bench: LengthBenchmark, data_name: str, expected, runs: pd.DataFrame) -> dict:
    """{variant: {x: [metric per run]}}, baselines {x: [..]}, runs {(variant, x): [run ids]}, from the
    runs of the dataset by the task it is for (an n-gram LM on an LM corpus has no such metric)."""
    items = [e for e in expected if e.cfg.data.name == data_name and e.cfg.task.name == e.cfg.data.get("task", "lm")]
    if not items:
        return {}
    labels = variant_labels(items, exclude=(bench.x,) if bench.x else ())
    by_hash = _finished(runs)
    values, baselines, run_ids = {}, {}, {}
    for e in items:
        label = labels[e.hash]
        xs = [OmegaConf.select(e.cfg, bench.x)] if bench.x else []
        for row in by_hash.get(e.hash, [])[:1]:
            m = _metrics_of(row)
            if bench.x is None:                                   # agreement: distances in the metrics
                xs = sorted(int(k[len(bench.metric):]) for k in m if k.startswith(bench.metric)
                            and k[len(bench.metric):].isdigit())
            for x in xs:
                value = m.get(f"{bench.metric}{x}" if bench.x is None else bench.metric, np.nan)
                values.setdefault(label, {}).setdefault(x, []).append(value)
                baselines.setdefault(x, []).append(bench.baseline(e.cfg, m))
                run_ids.setdefault((label, x if bench.x else None), []).append(row["run_id"])
        values.setdefault(label, {})
    return {"items": items, "values": values, "baselines": baselines, "run_ids": run_ids,
            "labels": labels}


# -- rendering ---------------------------------------------------------------------------------------------
def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.2e}"


def performance_table(bench: LengthBenchmark, data: dict) -> tuple[list[str], list[list[str]]]:
    xs = sorted(data["baselines"])
    base = {x: float(np.nanmean(v)) for x, v in data["baselines"].items()}
    header = ["variant", *[f"{bench.x_label.split(' (')[0]} = {x}" for x in xs], "stops beating the baseline at"]
    rows = [["baseline", *[fmt(base[x]) for x in xs], ""]]
    for label, by_x in data["values"].items():
        means = {x: float(np.nanmean(v)) for x, v in by_x.items() if len(v)}
        cells = []
        for x in xs:
            if x not in means:
                cells.append("–")
            else:
                mark = " ✓" if beats(means[x], base[x], bench.lower_is_better) else ""
                cells.append(f"{fmt(means[x])}{mark}" + (f" (n={len(by_x[x])})" if len(by_x[x]) > 1 else ""))
        rows.append([label, *cells, stops_beating(xs, means, base, bench.lower_is_better)])
    return header, rows


def plot_performance(bench: LengthBenchmark, data: dict, path: Path) -> bool:
    xs = sorted(data["baselines"])
    if not xs:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, by_x in data["values"].items():
        pts = [(x, float(np.nanmean(by_x[x]))) for x in xs if x in by_x and len(by_x[x])]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.plot(xs, [float(np.nanmean(data["baselines"][x])) for x in xs], "k--", label="baseline")
    ax.set_xlabel(bench.x_label)
    ax.set_ylabel(bench.metric + ("{d}" if bench.x is None else ""))
    ax.set_title(f"{bench.name}: {bench.metric} ({'lower' if bench.lower_is_better else 'higher'} is better)",
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_gradients(bench: LengthBenchmark, data: dict, tracker, x, path: Path) -> bool:
    """Two panels (untrained, trained): mean grad/h_norm over seeds by lag, one line per variant;
    the LSTM family's grad/c_norm dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    drawn = False
    for i, label in enumerate(data["values"]):
        ids = data["run_ids"].get((label, x), [])
        for ax, suffix in zip(axes, ("_init", "")):
            h = _mean_curves([_history(tracker, r, f"grad/h_norm{suffix}") for r in ids])
            c = _mean_curves([_history(tracker, r, f"grad/c_norm{suffix}") for r in ids])
            if len(h):
                ax.plot(np.arange(len(h)), np.clip(h, 1e-30, None), color=f"C{i % 10}", label=label)
                drawn = True
            if len(c):
                ax.plot(np.arange(len(c)), np.clip(c, 1e-30, None), color=f"C{i % 10}", linestyle="--")
    if not drawn:
        plt.close(fig)
        return False
    where = f" at {bench.x_label.split(' (')[0]} = {x}" if x is not None else ""
    for ax, title in zip(axes, ("untrained", "trained (tested weights)")):
        ax.set_yscale("log")
        ax.set_xlabel("lag T − t")
        ax.set_title(f"{bench.name}{where}: {title}", fontsize=9)
    axes[0].set_ylabel("mean ‖∂L/∂h_t‖ (dashed: ‖∂L/∂c_t‖)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def clipping_rows(bench: LengthBenchmark, data: dict, tracker, x) -> tuple[list[list[str]], dict]:
    """Variants at ``x`` that differ in clipping: clip value, pre-clip norm (max, median), final
    metric; and their grad/norm histories for the plot."""
    clip = {}
    for e in data["items"]:
        if bench.x is None or OmegaConf.select(e.cfg, bench.x) == x:
            clip.setdefault(data["labels"][e.hash], (e.cfg.trainer.get("gradient_clip_val"),
                                                     e.cfg.trainer.get("gradient_clip_algorithm")))
    # only the cells run with more than one clipping setting here
    model_of = {data["labels"][e.hash]: e.cfg.model.name for e in data["items"]}
    settings = {}
    for label, value in clip.items():
        settings.setdefault(model_of[label], set()).add(value)
    clip = {label: value for label, value in clip.items() if len(settings[model_of[label]]) > 1}
    rows, curves = [], {}
    for label, (value, algorithm) in clip.items():
        ids = data["run_ids"].get((label, x), [])
        pre = _mean_curves([_history(tracker, r, "grad/norm") for r in ids])
        post = _mean_curves([_history(tracker, r, "grad/clipped_norm") for r in ids])
        if not len(pre):
            continue
        metric = data["values"].get(label, {}).get(x, [])
        curves[label] = (pre, post)
        rows.append([label, f"{value or 0} ({algorithm})" if value else "off", fmt(float(np.nanmax(pre))),
                     fmt(float(np.nanmedian(pre))), fmt(float(np.nanmax(post))) if len(post) else "–",
                     fmt(float(np.nanmean(metric))) if metric else "–"])
    return rows, curves


def plot_clipping(bench: LengthBenchmark, curves: dict, x, path: Path) -> bool:
    """Global gradient norm per training step: solid before clipping, dotted after (clipped runs)."""
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6 + 0.25 * len(curves)))
    for i, (label, (pre, post)) in enumerate(curves.items()):
        ok = ~np.isnan(pre)
        ax.plot(np.arange(len(pre))[ok], pre[ok], color=f"C{i % 10}", linewidth=0.8, label=label)
        if len(post) and not np.allclose(post[~np.isnan(post)], pre[~np.isnan(pre)][:np.sum(~np.isnan(post))]):
            okp = ~np.isnan(post)
            ax.plot(np.arange(len(post))[okp], post[okp], color=f"C{i % 10}", linestyle=":", linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("global gradient norm")
    ax.set_title(f"{bench.name} at {bench.x_label.split(' (')[0]} = {x}: gradient norm before clipping "
                 f"(solid) and after (dotted)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def section(expected, runs: pd.DataFrame, tracker, out_dir: Path) -> dict:
    """Markdown lines and image paths of the long-range section."""
    md = ["## Long-range dependencies", "",
          f"Per benchmark: the metric against the dependency length per variant; ✓ = beats the trivial "
          f"baseline by at least {BEAT_MARGIN:.0%} less error. Gradient curves: mean ‖∂L/∂h_t‖ of the loss "
          f"at the last step against the lag T − t (dashed: ‖∂L/∂c_t‖, LSTM family), before and after "
          f"training.", ""]
    images = []

    def add_image(path: Path, alt: str):
        images.append(path)
        md.extend(image(path, alt))

    for k, (data_name, bench) in enumerate(benchmarks(expected)):
        data = collect(bench, data_name, expected, runs)
        if not data:
            continue
        md += [f"### {bench.name}: {bench.metric}{'{d}' if bench.x is None else ''} vs {bench.x_label}", ""]
        header, rows = performance_table(bench, data)
        md += [md_table(header, rows), ""]
        png = out_dir / f"longrange_{k}_{data_name}_metric.png"
        if plot_performance(bench, data, png):
            add_image(png, f"{bench.name}: {bench.metric} vs {bench.x_label}")
        for x in (sorted(data["baselines"]) if bench.x else [None]):
            png = out_dir / f"longrange_{k}_{data_name}_grad_{x if x is not None else 'all'}.png"
            if plot_gradients(bench, data, tracker, x, png):
                add_image(png, f"{bench.name}: gradient norm vs lag" + (f" at {x}" if x is not None else ""))
            rows, curves = clipping_rows(bench, data, tracker, x)
            if rows:
                header = ["variant", "clipping", "max norm before clipping", "median before", "max after",
                          bench.metric]
                md += [f"Clipping at {bench.x_label.split(' (')[0]} = {x}:", "", md_table(header, rows), ""]
                png = out_dir / f"longrange_{k}_{data_name}_clip_{x}.png"
                if plot_clipping(bench, curves, x, png):
                    add_image(png, f"{bench.name}: gradient norm per step, clipping on/off")
    return {"md": md, "images": images}
