"""Study reports: ``python -m seqbench.report <study>`` reads a study's runs back from MLflow and
writes ``reports/<study>/report.md`` and a self-contained ``report.html``.

The study file says which configurations were asked for; each is composed with Hydra and looked
up by its config hash, so a missing or failed run is listed, never silently dropped. One table per
(task, data): mean ± sd over seeds, every pair of rows Welch-tested and Holm-corrected, effect
sizes (Δ with its 95 % CI, Hedges' g), a verdict written from those numbers (★ only for a row
significantly better than all others), plots, and task-specific sections.

Modules: ``runs`` (MLflow, problems), ``statistics``, ``verdict``, ``labels``, ``tables``,
``plots``, ``render`` (md -> html), ``build`` (the study report), ``cli``, ``sections/`` (one
module per task-specific section: ``longrange``; ``decoding`` is the decoding study's report).
"""

from seqbench.protocol import protocol
from seqbench.report.build import log_report, write_report
from seqbench.report.cli import main
from seqbench.report.runs import fetch_runs, problems
from seqbench.report.sections.decoding import decoding_report
from seqbench.report.statistics import Comparison, compare, hedges_g, holm, mean_sd, welch
from seqbench.report.tables import build_tables
from seqbench.report.verdict import Verdict, decide

__all__ = ["Comparison", "Verdict", "build_tables", "compare", "decide", "decoding_report", "fetch_runs",
           "hedges_g", "holm", "log_report", "main", "mean_sd", "problems", "protocol", "welch",
           "write_report"]
