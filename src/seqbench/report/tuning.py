"""The tuning section of a study report: for every tuned grid point, each candidate's validation
objective at the tuning seed and the setting chosen for the comparison (``seqbench.study.choose``)."""

from __future__ import annotations

from seqbench.report.render import md_table
from seqbench.report.statistics import fmt


def margin(entry: dict) -> float:
    """How far the chosen candidate's objective is ahead of the runner-up's (nan with < 2 scored)."""
    scored = sorted(v for v in entry["candidates"].values() if v == v)
    if len(scored) < 2:
        return float("nan")
    return scored[1] - scored[0] if entry["direction"] == "min" else scored[-1] - scored[-2]


def tuning_section(study: dict, choice: dict[str, dict], noise: dict[str, float] | None = None) -> list[str]:
    """Markdown lines; empty when the study tunes nothing. ``noise``: per grid point, the sd over
    the comparison's seeds of the same objective at the chosen setting: a choice won by less than
    that is a near tie, which another seed (or another CPU's rounding) could have reversed."""
    if not choice:
        return []
    from seqbench.study import tuning

    noise = noise or {}
    settings = tuning(study)
    candidates = sorted({c for entry in choice.values() for c in entry["candidates"]})
    rows, ties = [], []
    for point, entry in choice.items():
        lead, sd = margin(entry), noise.get(point, float("nan"))
        tie = lead == lead and sd == sd and lead < sd
        if tie:
            ties.append(point)
        rows.append([point, *[("**" + fmt(entry["candidates"][c]) + "**") if entry.get("chosen") == c.split(" ")
                              else fmt(entry["candidates"].get(c, float("nan"))) for c in candidates],
                     " ".join(entry["chosen"]) if "chosen" in entry else "not chosen yet (no finished tuning run)",
                     fmt(lead), fmt(sd), "near tie" if tie else "–"])
    budget = {p: len(e["candidates"]) for p, e in choice.items()}
    same = len(set(budget.values())) == 1
    keys = sorted({k for g in study.get("grids", []) for k in (g.get("tune") or {})})
    return ["## Tuning", "",
            f"Each grid point's setting was chosen on validation: one run per candidate at the tuning seed "
            f"{settings['seed']}" + (f" with {' '.join(settings['overrides'])}" if settings["overrides"] else "")
            + f", {objectives(choice)} wins (bold); the comparison above ran at the chosen setting "
            f"over the study's seeds. Tuning budget: "
            + (f"{next(iter(budget.values()))} candidates for every point" if same else
               "per point " + ", ".join(f"{p} {n}" for p, n in budget.items()))
            + f" over {', '.join(keys)}. lead: how far the chosen candidate is ahead of the runner-up; seed sd: "
            f"the sd of the same objective over the comparison's seeds at the chosen setting.", "",
            md_table(["grid point", *candidates, "chosen", "lead", "seed sd", "near tie?"], rows), "",
            *([f"**Near ties:** {', '.join(ties)}: the chosen setting won by less than the noise between seeds, "
               f"so the choice (and a verdict that rests on it) could flip with another seed or CPU.", ""] if ties else [])]


def objectives(choice: dict[str, dict]) -> str:
    """"lowest val/best_loss" (or, where the points' objectives differ, each with its grids)."""
    words = {p: f"{'lowest' if e['direction'] == 'min' else 'highest'} {e['objective']}" for p, e in choice.items()}
    if len(set(words.values())) == 1:
        return next(iter(words.values()))
    grids: dict[str, list[str]] = {}
    for point, word in words.items():
        grid = point.partition(": ")[0]
        if grid not in grids.setdefault(word, []):
            grids[word].append(grid)
    return "; ".join(f"{w} ({', '.join(g)})" for w, g in grids.items())


def importance_section(choice: dict[str, dict]) -> list[str]:
    """How much each tuned setting (and each swept grid axis, e.g. the cell) matters for the
    validation objective of a grid's tuning runs: fANOVA importances (Hutter et al. 2014, as Greff
    et al. 2015 report them) from optuna's ``FanovaImportanceEvaluator``, over the runs as trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    grids: dict[str, list[tuple[dict, float]]] = {}
    for point, entry in choice.items():
        grid, _, axes = point.partition(": ")
        for candidate, value in entry["candidates"].items():
            if value == value:  # finished
                params = dict(o.split("=", 1) for o in f"{axes} {candidate}".split())
                grids.setdefault(grid, []).append((params, value))
    rows = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for grid, trials in grids.items():
        keys = sorted({k for params, _ in trials for k in params})
        values = {k: sorted({params.get(k, "") for params, _ in trials}) for k in keys}
        varying = [k for k in keys if len(values[k]) > 1]
        if len(varying) < 2 or len(trials) < 4:
            continue
        study = optuna.create_study()
        for params, value in trials:
            study.add_trial(optuna.trial.create_trial(
                params={k: params.get(k, "") for k in varying}, value=value,
                distributions={k: CategoricalDistribution(values[k]) for k in varying}))
        importance = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        rows.append([grid, len(trials), ", ".join(f"{k} {v:.2f}" for k, v in importance.items())])
    if not rows:
        return []
    return ["### What matters (fANOVA)", "",
            "Share of the variance of the tuning runs' validation objective explained by each setting "
            "(fANOVA over the tuning runs; one seed per setting, so read it as a rough guide):", "",
            md_table(["grid", "tuning runs", "importance"], rows), ""]
