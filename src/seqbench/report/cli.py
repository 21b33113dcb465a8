"""``python -m seqbench.report <study>``: MLflow runs -> comparison tables, verdicts, plots, md + html."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from seqbench.errors import ConfigError
from seqbench.report.build import log_report, write_report
from seqbench.report.runs import fetch_runs
from seqbench.report.sections.decoding import decoding_report
from seqbench.study import load_study, resolve, study_tracker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqbench.report", description=__doc__.split("\n")[0])
    parser.add_argument("study")
    parser.add_argument("--out", default=None, help="output folder (default reports/<study>)")
    parser.add_argument("--page", default=None, help="also write a results page there (e.g. docs/<study>.md)")
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
        tuned, expected, choice = ([], [], {}) if study.get("kind") == "decoding" else \
            resolve(study, root, tracker, grid_extra)
    except ConfigError as e:
        print(f"seqbench.report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(root) / "reports" / study["name"]
    if study.get("kind") == "decoding":
        result = decoding_report(study, tracker, out)
    else:
        runs = fetch_runs(tracker, [e.hash for e in expected], study["name"])
        result = write_report(study, expected, runs, tracker, out, choice)
    run_id = log_report(tracker, study, result)
    if args.page and study.get("kind") != "decoding":
        from seqbench.report.page import provenance, write_page

        write_page(Path(args.page), out, provenance(study, runs, tracker))
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}  {out / 'report.html'}  (MLflow: artifacts report/ of the study's "
          f"parent run {run_id}, experiment {tracker.experiment!r})")
    return 0
