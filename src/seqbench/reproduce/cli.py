"""``python -m seqbench.reproduce [RECIPE ...] [--size cpu|full]``: run recipes, then write the
reproduction report (published vs measured) to ``reports/reproduce/`` and log it to MLflow.

Without RECIPE every recipe that has the size runs, one after another; a recipe that cannot start
(its data is not here, e.g. IMDb offline) is reported with its one-line reason and the others go on.
Re-running skips what is FINISHED (same config and code), so the report can be rebuilt at no cost
(``--report-only`` runs nothing).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from seqbench.errors import SeqbenchError
from seqbench.reproduce.recipe import SIZES, load_recipe, recipe_study, recipes, study_name
from seqbench.reproduce.table import Row, goal_text, rows_for


def fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"


def command(name: str, size: str) -> str:
    return f"make reproduce RECIPE={name}" + ("" if size == "cpu" else f" SIZE={size}")


def existing_tracker(root: str, study: str, tracking: list[str]):
    """The study's Tracker if its experiment exists (a report does not create empty experiments)."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from seqbench.tracking import experiment_name, tracker_for
    from seqbench.validate import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={root}", *tracking, f"study={study}"])
    if cfg.logger.name != "mlflow":
        return None
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        exists = MlflowClient(cfg.logger.tracking_uri).get_experiment_by_name(experiment_name(cfg)) is not None
    finally:  # MlflowClient leaves the process's tracking URI alone; restore anyway for symmetry
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return tracker_for(cfg) if exists else None


def recipe_rows(name: str, size: str, root: str, tracking: list[str], extra: list[str]):
    """(recipe, rows, problems, tracker) of a recipe at a size from MLflow; rows empty if never run."""
    from seqbench.report.runs import fetch_runs, problems
    from seqbench.study import resolve

    recipe = load_recipe(name)
    study = recipe_study(recipe, size)
    tracker = existing_tracker(root, study["name"], tracking)
    if tracker is None:
        return recipe, [], [], None
    _, expected, _ = resolve(study, root, tracker, extra)
    runs = fetch_runs(tracker, [e.hash for e in expected], study["name"])
    return recipe, rows_for(recipe, size, expected, runs), problems(expected, runs), tracker


def table_line(recipe: dict, row: Row) -> list[str]:
    a = row.anchor
    unit = f" {a['unit']}" if a.get("unit") else ""
    published = "–" if a.get("published") is None else f"{a['published']:g}{unit}"
    measured = (f"{fmt(row.mean)} ± {fmt(row.sd)} (n={row.n}" + (f" of {row.expected}" if row.n < row.expected else "")
                + ")") if row.values else f"no FINISHED run (of {row.expected})"
    met = {True: "yes", False: "**no**", None: "–"}[row.met]
    minutes = f"{sum(row.wall_times) / len(row.wall_times) / 60:.1f}" if row.wall_times else "–"
    metric = f"exp({a['metric']})" if a.get("transform") == "exp" else a["metric"]
    return [recipe["name"], row.label or recipe["title"], metric + (f" ×{a['scale']:g}" if a["scale"] != 1 else ""),
            published, measured, "–" if math.isnan(row.delta) else f"{row.delta:+.3g}",
            goal_text(a["goal"], a.get("published")), met, minutes]


HEADER = ["recipe", "row", "metric", "published", "seqbench mean ± sd (n)", "Δ", "goal", "met?", "min/run"]


def report(size: str, names: list[str], root: str, tracking: list[str], extra: list[str], out: Path,
           not_run: dict[str, str]) -> tuple[str, list]:
    """Markdown of the reproduction report for ``names`` at ``size``; also the per-recipe results."""
    from seqbench.protocol import protocol
    from seqbench.report.render import md_table

    lines, sections, results = [], [], []
    table = []
    for name in names:
        recipe, rows, issues, tracker = recipe_rows(name, size, root, tracking, extra)
        results.append((recipe, rows, tracker))
        if not rows:
            reason = not_run.get(name, "never run")
            table.append([name, recipe["title"], recipe["anchor"]["metric"], "", f"not run: {reason}", "", "", "–", ""])
            continue
        table += [table_line(recipe, r) for r in rows]
        spec = recipe["sizes"][size] or {}
        seeds = recipe_study(recipe, size)["seeds"]
        sections += [f"### {recipe['title']} (`{name}`)", "",
                     f"**Published:** {rows[0].anchor['citation']}", "",
                     f"**Command:** `{command(name, size)}`" + (f" — budget: {spec['budget']}" if spec.get("budget") else ""), ""]
        if recipe.get("note"):
            sections += [f"**How this differs from the paper:** {recipe['note'].strip()}", ""]
        for r in rows:
            lo, hi = r.ci
            conv = (f"; converged (early stopping) in {int(sum(r.converged))}/{len(r.converged)} runs"
                    if r.converged else "")
            made = (f"; made by commit {', '.join(sorted(r.commits))} (code_version {', '.join(sorted(r.code_versions))})"
                    if r.commits else "")
            sections += [f"- **{r.label or recipe['title']}**: 95 % CI of the mean [{fmt(lo)}, {fmt(hi)}]{conv}{made}. "
                         f"Protocol: {protocol(r.cfg, seeds)}"]
        if issues:
            sections += ["", "Runs without a FINISHED result:", "",
                         md_table(["run", "status", "run id", "reason"], issues)]
        sections.append("")
    lines += [f"# seqbench reproductions ({size} size)", "",
              "Each row: a recipe's protocol run over its seeds (and folds), against the published figure it "
              "reproduces. Δ = mean − published; the goal is decided on the mean; min/run is the mean wall time "
              "of a run. Each recipe's section gives its citation, the command that regenerates its rows, how "
              "its protocol differs from the paper's, the 95 % CI of every mean and the full protocol.", "",
              md_table(HEADER, table), "", "## Recipes", "", *sections]
    return "\n".join(lines), results


def log_results(results: list, out: Path) -> None:
    """Per recipe parent run: each row's mean, sd, n and goal as metrics, the report as artifacts."""
    for recipe, rows, tracker in results:
        if tracker is None or not rows:
            continue
        parent = tracker.study_run(study_name(recipe, rows[0].size), recipe["title"])
        for r in rows:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", r.label or "all").strip("_")
            metrics = {"mean": r.mean, "sd": r.sd, "n": r.n}
            if r.met is not None:
                metrics["goal_met"] = float(r.met)
            tracker.log_metrics({f"reproduce/{slug}/{k}": v for k, v in metrics.items() if not math.isnan(v)},
                                run_id=parent)
        for name in ("report.md", "report.html"):
            tracker.client.log_artifact(parent, str(out / name), "reproduce")


def main(argv: list[str] | None = None) -> int:
    from seqbench.report.render import write
    from seqbench.sweep import LAUNCHERS, run_study

    parser = argparse.ArgumentParser(prog="python -m seqbench.reproduce", description=__doc__.split("\n")[0])
    parser.add_argument("items", nargs="*", metavar="RECIPE|OVERRIDE",
                        help=f"recipes (default: all with the size: {', '.join(recipes())}) and Hydra overrides "
                             f"for every run (key=value, e.g. logger.tracking_uri=...)")
    parser.add_argument("--size", default="cpu", help=f"one of: {', '.join(SIZES)}")
    parser.add_argument("--launcher", default="local", help=f"one of: {', '.join(LAUNCHERS)}")
    parser.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: the recipe's `jobs`)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; rebuild the report from MLflow")
    parser.add_argument("--out", default=None, help="report folder (default reports/reproduce[/<size>])")
    args = parser.parse_intermixed_args(argv)
    root = os.environ.get("SEQBENCH_ROOT", os.getcwd())
    args.overrides = [i for i in args.items if "=" in i]
    names = [i for i in args.items if "=" not in i] or recipes(args.size)
    try:
        if args.size not in SIZES:
            from seqbench.errors import choice_error
            raise choice_error("size", args.size, SIZES)
        loaded = {n: load_recipe(n) for n in names}
        for n, recipe in loaded.items():
            recipe_study(recipe, args.size)  # the size exists
    except SeqbenchError as e:
        print(f"seqbench.reproduce: error: {e}", file=sys.stderr)
        return 2
    tracking = [o for o in args.overrides if o.startswith(("logger", "paths"))]
    extra = [o for o in args.overrides if o not in tracking]
    not_run: dict[str, str] = {}
    code = 0
    if not args.report_only:
        for name, recipe in loaded.items():
            study = recipe_study(recipe, args.size)
            print(f"== reproduce {name} ({args.size}): {recipe['title']}", flush=True)
            rc = run_study(study, args.launcher, args.jobs or recipe.get("jobs"), args.overrides)
            if rc == 2:
                not_run[name] = "bad input or data not available (see the error line above)"
                if len(names) == 1:
                    return 2
            elif rc > 128:
                return rc
            code = max(code, rc)
    out = Path(args.out) if args.out else Path(root) / "reports" / "reproduce" / ("" if args.size == "cpu" else args.size)
    out.mkdir(parents=True, exist_ok=True)
    markdown, results = report(args.size, names, root, tracking, extra, out, not_run)
    write(out, markdown.splitlines(), f"seqbench reproductions ({args.size})")
    log_results(results, out)
    print(markdown)
    print(f"report: {out / 'report.md'}  {out / 'report.html'}")
    return code or (2 if not_run and len(not_run) == len(names) else 0)


if __name__ == "__main__":
    sys.exit(main())
