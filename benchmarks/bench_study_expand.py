"""How long the sweep driver takes to expand a study into its configurations, before any job runs.

``make sweep`` composes every (grid point x seed) of a study, as its jobs will compose them, to
check them and to know which are already FINISHED (``seqbench.study.expected_runs``): for the
tune stage, then for the comparison. Hydra's ``compose`` costs tens of milliseconds a config, so
the driver composes a grid point once and makes its other seeds a copy with ``seed`` set
(``study.at_other_seed``: nothing in the config is composed from ``seed``), and keeps the
composed configs for the rest of the process (``study._composed``: the choice after tuning
expands the study again). This benchmark times, on every shipped study, in the same rounds:

* every config composed by Hydra (the baseline: ``at_other_seed`` turned off, nothing kept);
* the first expansion (one compose per grid point, copies at the other seeds);
* a later expansion in the same process (copies only);

checks that all three give the same configs (every config hash equal), and reports the ratios.
``python benchmarks/bench_study_expand.py`` writes ``benchmarks/results/study-expand-cpu.md``;
``--quick`` is one round of two CPU-sized studies, unsaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from unittest import mock

from _common import machine_info, markdown_table, report_head, save_report

from seqbench import study as study_module
from seqbench.study import expected_runs, load_study, studies

#: the stages the driver expands, in its order (a study without ``tune:`` has no tune stage)
STAGES = ("tune", "compare")
MODES = ("every config composed", "first expansion", "again in the process")


def expand_study(study: dict, root: str, mode: str) -> tuple[float, list[str], int]:
    """Seconds to expand both stages in ``mode`` (see :data:`MODES`), the config hashes, and the
    number of grid points (configs but for the seed)."""
    if mode != "again in the process":
        study_module._composed.clear()
    off = mock.patch.object(study_module, "at_other_seed", lambda conf, overrides: None)
    start = time.perf_counter()
    if mode == "every config composed":
        with off:
            expected = [(stage, e) for stage in STAGES for e in expected_runs(study, root, stage=stage)]
            study_module._composed.clear()   # keeps nothing for the next mode (every (point, seed) of
            # a stage is a distinct override list, and the two stages share none, so none was reused)
    else:
        expected = [(stage, e) for stage in STAGES for e in expected_runs(study, root, stage=stage)]
    seconds = time.perf_counter() - start
    points = {(stage, tuple(o for o in e.overrides if not o.startswith("seed="))) for stage, e in expected}
    return seconds, [e.hash for _, e in expected], len(points)


def expandable() -> list[str]:
    """The shipped studies that have grids (a decoding study reads another study's runs)."""
    return [name for name in studies() if load_study(name).get("grids")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of two CPU-sized studies, nothing saved")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    names = [n for n in expandable() if not n.endswith("_full")][:2] if args.quick else expandable()
    t0 = time.perf_counter()
    rows = []
    root = tempfile.gettempdir()
    for name in names:
        study = load_study(name)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        reference = None
        for r in range(rounds):
            # the first two alternate; "again" needs the first expansion just before it
            for mode in (MODES if r % 2 == 0 else (MODES[1], MODES[2], MODES[0])):
                seconds, hashes, points = expand_study(study, root, mode)
                if reference is None:
                    reference = hashes
                if hashes != reference:
                    raise RuntimeError(f"{name}: '{mode}' gave other configs than '{MODES[0]}'")
                times[mode].append(seconds)
        n_configs = len(reference)
        base = statistics.median(times[MODES[0]])
        for mode in MODES:
            median = statistics.median(times[mode])
            rows.append([name, f"{n_configs} configs, {points} grid points", mode, f"{median:.2f}",
                         " ".join(f"{t:.2f}" for t in times[mode]), f"{1e3 * median / n_configs:.1f}",
                         f"{base / median:.2f}"])
        print(f"{name}: " + ", ".join(f"{m} {statistics.median(times[m]):.2f} s" for m in MODES),
              file=sys.stderr, flush=True)
    info = {k: v for k, v in machine_info("cpu").items() if k != "torch threads (intra-op)"}
    lines = [*report_head("Expanding a study into its configurations (cpu)",
                          f"python benchmarks/bench_study_expand.py --rounds {rounds}"
                          f"{' --quick' if args.quick else ''}", t0, info),
             "## Protocol", "",
             "* For each shipped study with grids (`pipelines/*.yaml`), `seqbench.study.expected_runs` for the tune "
             "stage, then the comparison (tuned grids at their first candidates), as `make sweep` expands a study "
             "before its first job: every config checked and composed as its job will compose it, then hashed.",
             "* `every config composed`: Hydra composes every (grid point x seed) and nothing is kept (the "
             "baseline: `study.at_other_seed` turned off, the cache cleared); `first expansion`: the cache cleared, "
             "a grid point composed once and its other seeds copies with `seed` set; `again in the process`: "
             "right after the first expansion, every config a copy from the cache (the driver's choice after "
             "tuning, and its later checks).",
             "* Every mode's config hashes are checked equal to the baseline's, in order, in every round.",
             f"* {rounds} round(s), the first two modes in alternating order; reported: median seconds, every "
             "round's, milliseconds a config, and the speed-up over the baseline measured in this run.", "",
             "## Results", "",
             markdown_table(["study", "size (both stages)", "mode", "s (median)", "s (rounds)", "ms a config",
                             "speed-up"], rows), ""]
    save_report("\n".join(lines), "study-expand-cpu.md", save=not args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
