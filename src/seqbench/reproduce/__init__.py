"""Reproductions: a published figure, the protocol that should reach it, and what seqbench measures.

A recipe is ``pipelines/reproduce/<name>.yaml``: a study (grids of Hydra overrides, seeds) plus its
**anchor** (the published figure, its citation, the metric it corresponds to and the goal a
reproduction must meet) and its **sizes** (``cpu``: about 10 minutes on 2 cores; ``full``: the
published budget, for a GPU or a cluster). ``make reproduce RECIPE=<name>`` runs it through the
sweep machinery (one MLflow parent run per recipe and size, resumable, same code only) and writes
one table row per grid point: recipe | protocol | published | mean ± sd (n) | Δ | goal | met?
to ``reports/reproduce/report.md`` (+ html), also logged on the recipe's parent run.

Modules: ``recipe`` (load a recipe, its study at a size, its anchors), ``table`` (rows: the
statistics and the goal test), ``cli`` (run, then report).
"""

from seqbench.reproduce.recipe import load_recipe, recipe_study, recipes
from seqbench.reproduce.table import Row, goal_met, goal_text, rows_for

__all__ = ["Row", "goal_met", "goal_text", "load_recipe", "recipe_study", "recipes", "rows_for"]
