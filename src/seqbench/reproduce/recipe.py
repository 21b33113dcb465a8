"""A recipe file (``pipelines/reproduce/<name>.yaml``) and the study it runs at a size.

    name, title        the recipe's name (``make reproduce RECIPE=<name>``) and a human title
    anchor             the published figure: citation, metric (an MLflow metric of the runs),
                       published (null: no published number for this row), unit, transform (exp:
                       compare exp(metric), e.g. a perplexity from a loss in nats), scale (the metric
                       is multiplied by it before comparing: 100 turns an accuracy into percent),
                       goal: {at_most: v} | {at_least: v} | {within: r} (|mean - published| <= r * published)
                       | null (a row measured for context, e.g. the same recipe with another cell)
    note               what differs from the paper's protocol, and why (printed under the table)
    seeds, jobs        seeds of every row; parallel jobs (1: one after another, each with every core,
                       so a run's wall time is the budget the recipe states)
    common, grids      as in a study (``seqbench.study``); a grid may carry its own ``anchor`` (merged
                       over the recipe's and the size's) and ``replicates``: swept keys that are repetitions (MR's
                       ``data.fold``), pooled with the seeds into one row
    sizes              cpu (required) and full: ``overrides`` appended to ``common`` (they win over a
                       grid's), optional ``seeds``, ``grids`` (replacing the recipe's), ``anchor``
                       (over the recipe's, under a grid's own: a full run may have a stricter goal)
                       and ``budget`` (text)
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from seqbench.errors import ConfigError, choice_error
from seqbench.study import PIPELINES

RECIPES = PIPELINES / "reproduce"
SIZES = ("cpu", "full")
GOALS = ("at_most", "at_least", "within")


def recipes(size: str | None = None) -> list[str]:
    """Names of the recipes in pipelines/reproduce (with that size, if given)."""
    out = []
    for path in sorted(RECIPES.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text()) or {}
        if size is None or size in (recipe.get("sizes") or {}):
            out.append(path.stem)
    return out


def load_recipe(name: str) -> dict:
    """A recipe by name or path, checked: its keys, its goals, its sizes."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise choice_error("recipe", name, recipes())
    recipe = yaml.safe_load(path.read_text()) or {}
    for key in ("name", "title", "anchor", "grids", "sizes"):
        if key not in recipe:
            raise ConfigError(f"recipe file {path} has no '{key}' key")
    if "cpu" not in recipe["sizes"]:
        raise ConfigError(f"recipe {recipe['name']}: sizes has no 'cpu' entry")
    for size, spec in recipe["sizes"].items():
        if size not in SIZES:
            raise choice_error(f"recipe {recipe['name']}: size", size, SIZES)
        for grid in (spec or {}).get("grids", recipe["grids"]):
            check_anchor(recipe["name"], anchor_of(recipe, grid, size))
    return recipe


def anchor_of(recipe: dict, grid: dict, size: str) -> dict:
    """The anchor of a grid's rows at a size: the recipe's, updated by the size's, then by the
    grid's own (a row's own figure wins over a size-wide goal)."""
    size_anchor = (recipe["sizes"].get(size) or {}).get("anchor") or {}
    return {"scale": 1, "unit": "", "published": None, **recipe["anchor"], **size_anchor, **(grid.get("anchor") or {})}


def check_anchor(recipe: str, anchor: dict) -> None:
    for key in ("citation", "metric", "goal"):
        if key not in anchor:
            raise ConfigError(f"recipe {recipe}: its anchor has no '{key}'")
    if anchor.get("transform") not in (None, "exp"):
        raise ConfigError(f"recipe {recipe}: transform={anchor['transform']} must be exp or absent")
    goal = anchor["goal"]
    if goal is None:  # a row measured for context (no published figure to meet)
        return
    if not isinstance(goal, dict) or len(goal) != 1 or next(iter(goal)) not in GOALS:
        raise ConfigError(f"recipe {recipe}: goal={goal} must be one of {{at_most: v}}, {{at_least: v}}, {{within: r}}")
    if "within" in goal and anchor.get("published") is None:
        raise ConfigError(f"recipe {recipe}: goal 'within' needs a published figure")


def study_name(recipe: dict, size: str) -> str:
    """The study (MLflow experiment ``<experiment>/<study>``) of a recipe at a size."""
    return f"reproduce-{recipe['name']}" + ("" if size == "cpu" else f"-{size}")


def recipe_study(recipe: dict, size: str = "cpu") -> dict:
    """The study a recipe runs at ``size``: its grids, the size's overrides after ``common``."""
    if size not in recipe["sizes"]:
        raise choice_error(f"size of recipe {recipe['name']}", size, list(recipe["sizes"]))
    spec = recipe["sizes"][size] or {}
    return {"name": study_name(recipe, size),
            "description": f"Reproduction ({size} size) of {recipe['title']}: {recipe['anchor']['citation']}",
            "seeds": spec.get("seeds", recipe.get("seeds", [0])),
            "common": [*recipe.get("common", []), *spec.get("overrides", [])],
            "grids": copy.deepcopy(spec.get("grids", recipe["grids"])),
            **({"tuning": recipe["tuning"]} if "tuning" in recipe else {})}
