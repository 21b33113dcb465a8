"""The tuning section of a study report: for every tuned grid point, each candidate's validation
objective at the tuning seed and the setting chosen for the comparison (``seqbench.study.choose``)."""

from __future__ import annotations

from seqbench.report.render import md_table
from seqbench.report.statistics import fmt


def tuning_section(study: dict, choice: dict[str, dict]) -> list[str]:
    """Markdown lines; empty when the study tunes nothing."""
    if not choice:
        return []
    from seqbench.study import tuning

    settings = tuning(study)
    candidates = sorted({c for entry in choice.values() for c in entry["candidates"]})
    rows = [[point, *[("**" + fmt(entry["candidates"][c]) + "**") if entry.get("chosen") == c.split(" ")
                      else fmt(entry["candidates"].get(c, float("nan"))) for c in candidates],
             " ".join(entry["chosen"]) if "chosen" in entry else "not chosen yet (no finished tuning run)"]
            for point, entry in choice.items()]
    return ["## Tuning", "",
            f"Each grid point's setting was chosen on validation: one run per candidate at the tuning seed "
            f"{settings['seed']}" + (f" with {' '.join(settings['overrides'])}" if settings["overrides"] else "")
            + f", lowest {settings['objective']} wins (bold); the comparison above ran at the chosen setting "
            f"over the study's seeds.", "",
            md_table(["grid point", *candidates, "chosen"], rows), ""]
