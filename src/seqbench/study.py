"""A study: ``pipelines/<name>.yaml``, a list of grids over Hydra overrides with shared seeds.

Both the sweep (what to run) and the report (what to look up) expand a study into the same list of
expected configurations, each composed with Hydra and identified by its config hash.

**Per-cell tuning** (Greff et al. 2015, scaled down). A grid may declare ``tune``: candidate values
of settings to choose per grid point, e.g. ``tune: {optimizer.lr: [0.003, 0.01, 0.03]}``. The
study then runs in two stages: *tune* — every grid point x every candidate, once, at the study's
tuning seed (``tuning.seed``, not one of the comparison seeds) with ``stage=tune`` and any cheaper
``tuning.overrides``; each point's candidate with the best validation objective is chosen (by
default the best value of the metric the run selects its checkpoint by: ``val/best_loss``, lower
is better, or with ``selection=accuracy`` ``val/best_accuracy``, higher is better; a study may fix
``tuning.objective`` and ``tuning.direction``) — then *compare* —
every grid point at its own chosen setting over the comparison seeds; test metrics are reported.
Tuning runs are ordinary tracked, resumable runs, launched in parallel like any grid; the chosen
values are derived from them whenever the study is expanded (:func:`choose`), so the sweep and the
report always agree on them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig

from seqbench.errors import ConfigError, choice_error
from seqbench.tracking import config_hash

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def studies() -> list[str]:
    """Names of the studies in pipelines/ (tune.yaml there is a search space, not a study)."""
    return sorted(p.stem for p in PIPELINES.glob("*.yaml") if "name" in (yaml.safe_load(p.read_text()) or {}))


def load_study(name: str) -> dict:
    """A study by name (``pipelines/<name>.yaml``) or by path to a YAML file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PIPELINES / f"{name}.yaml"
    if not path.is_file():
        raise choice_error("study", name, studies())
    study = yaml.safe_load(path.read_text())
    for key in ("name", "source_study") if study.get("kind") == "decoding" else ("name", "grids"):
        if key not in study:
            raise ConfigError(f"study file {path} has no '{key}' key")
    for grid in study.get("grids", []):  # a tuned key set elsewhere too would be ambiguous
        fixed = {o.split("=", 1)[0].lstrip("+~") for o in [*grid["overrides"], *study.get("common", [])]}
        for key, values in (grid.get("tune") or {}).items():
            if key in fixed:
                raise ConfigError(f"grid '{grid.get('name', '')}' tunes {key} and also sets it; remove one")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid '{grid.get('name', '')}': tune.{key} must be a list of candidate values")
    if (direction := tuning(study)["direction"]) not in ("min", "max"):
        raise choice_error("tuning.direction", direction, ("max", "min"))
    return study


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def tuning(study: dict) -> dict:
    """The study's tuning settings with their defaults."""
    return {"seed": 100, "overrides": [], "objective": None, "direction": "min", **(study.get("tuning") or {})}


def objective_for(study: dict, cfg: DictConfig) -> tuple[str, str]:
    """The validation objective a tuning run is scored by and its direction ("min"/"max"): the
    study's ``tuning.objective`` (and ``tuning.direction``), else the best value of the metric the
    run selects its checkpoint by (``selection=accuracy``: ``val/best_accuracy``, "max")."""
    settings = tuning(study)
    if settings["objective"]:
        return settings["objective"], settings["direction"]
    from seqbench.run import best_metric

    return best_metric(cfg)


def point_key(grid: dict, overrides: list[str]) -> str:
    """Which grid point a run belongs to: the grid's name and its values of the grid's swept keys,
    e.g. ``copy memory: model=lstm`` (a tuned setting is chosen per such point)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = {o.get_key_element() for o in OverridesParser.create().parse_overrides(grid["overrides"])
             if o.is_sweep_override()}
    return f"{grid.get('name', '')}: " + " ".join(o for o in overrides if key_of(o) in swept)


@dataclass
class Sweep:
    """One Hydra multirun of a study (its overrides, without study/launcher settings)."""

    grid: dict
    overrides: list[str]
    stage: str = "compare"


def sweeps(study: dict, stage: str = "compare", chosen: dict[str, list[str]] | None = None) -> list[Sweep]:
    """The multiruns of a study's stage. ``compare``: each untuned grid as one multirun over the
    seeds; a tuned grid as one multirun per grid point at its chosen setting (the first candidates
    while nothing is chosen yet). ``tune``: each tuned grid x its candidates at the tuning seed."""
    seeds = ",".join(str(s) for s in study.get("seeds", [0]))
    common, tune_cfg = study.get("common", []), tuning(study)
    out = []
    for grid in study["grids"]:
        tune = grid.get("tune") or {}
        if stage == "tune":
            if tune:
                candidates = [f"{k}={','.join(map(str, v))}" for k, v in tune.items()]
                out.append(Sweep(grid, [*grid["overrides"], *candidates, f"seed={tune_cfg['seed']}", *common,
                                        *tune_cfg["overrides"], "stage=tune"], "tune"))
        elif not tune:
            out.append(Sweep(grid, [*grid["overrides"], f"seed={seeds}", *common]))
        else:  # points that share their chosen setting share a multirun (fewer launches, fuller cores)
            by_setting: dict[tuple, list[list[str]]] = {}
            for point in expand(grid["overrides"]):
                setting = (chosen or {}).get(point_key(grid, point)) or [f"{k}={v[0]}" for k, v in tune.items()]
                by_setting.setdefault(tuple(setting), []).append(point)
            for setting, points in by_setting.items():
                for group in merge_points(points):
                    out.append(Sweep(grid, [*group, *setting, f"seed={seeds}", *common]))
    return out


def merge_points(points: list[list[str]]) -> list[list[str]]:
    """Grid points (same keys, in order) as few sweep override lists as possible: points that
    differ in one key only become one sweep over that key (``model=rnn,gru``); otherwise each
    point stays its own."""
    differing = [i for i in range(len(points[0])) if len({p[i] for p in points}) > 1]
    if len(differing) != 1:
        return points if differing else points[:1]
    i = differing[0]
    values = ",".join(dict.fromkeys(p[i].split("=", 1)[1] for p in points))
    return [[*points[0][:i], f"{key_of(points[0][i])}={values}", *points[0][i + 1:]]]


def choose(study: dict, tuned: list["Expected"], objective_of: dict[str, float]) -> dict[str, dict]:
    """Per tuned grid point: every candidate's validation objective and the chosen (best) one.

    ``tuned``: the tune stage's expected runs; ``objective_of``: config hash -> objective
    (:func:`objective_for`) of its FINISHED run. Returns ``{point_key: {"objective":
    "val/best_loss", "direction": "min", "candidates": {"optimizer.lr=0.01": value, ...},
    "chosen": ["optimizer.lr=0.01"]}}``; a point with no finished candidate gets no "chosen"."""
    out: dict[str, dict] = {}
    for e in tuned:
        tune = e.grid.get("tune") or {}
        candidate = " ".join(o for o in e.overrides if key_of(o) in tune)
        objective, direction = objective_for(study, e.cfg)
        entry = out.setdefault(point_key(e.grid, e.overrides),
                               {"objective": objective, "direction": direction, "candidates": {}})
        entry["candidates"][candidate] = objective_of.get(e.hash, float("nan"))
    for entry in out.values():
        scored = {c: v for c, v in entry["candidates"].items() if v == v}  # not NaN
        if scored:
            best = min if entry["direction"] == "min" else max
            entry["chosen"] = best(scored, key=scored.get).split(" ")
    return out


def resolve(study: dict, root: str, tracker, extra: list[str] = ()) -> tuple[list["Expected"], list["Expected"], dict]:
    """The study's expected runs: (tuning runs, comparison runs at the chosen settings, the
    choice per tuned point). Choices come from the FINISHED tuning runs in MLflow."""
    tuned = expected_runs(study, root, extra, stage="tune")
    any_code = "reuse_other_code=true" in extra
    metrics = finished_metrics(tracker, study["name"], any_code) if tuned and tracker else {}
    objective_of = {e.hash: metrics[e.hash][m] for e in tuned
                    if (m := objective_for(study, e.cfg)[0]) in metrics.get(e.hash, {})}
    choice = choose(study, tuned, objective_of)
    chosen = {k: v["chosen"] for k, v in choice.items() if "chosen" in v}
    return tuned, expected_runs(study, root, extra, chosen=chosen), choice


def finished_metrics(tracker, study: str, any_code: bool = False) -> dict[str, dict[str, float]]:
    """config hash -> the metrics of the newest FINISHED run of the study made by this code
    (``code_version``; any code with ``any_code``), from one search."""
    from seqbench.tracking import code_version

    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.study = '{study}' and attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time DESC"], max_results=50000)
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        h = r.data.tags.get("config_hash")
        if h and h not in out and (any_code or r.data.tags.get("code_version") == code_version()):
            out[h] = r.data.metrics
    return out


def study_tracker(root: str, study: str, overrides: list[str] = ()):
    """The Tracker of a study's experiment (``<experiment>/<study>``) under the logger settings
    in ``overrides`` (``logger.*``, ``paths.*``); None with ``logger=none``."""
    from hydra import compose, initialize_config_dir

    from seqbench.tracking import tracker_for
    from seqbench.validate import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={root}", *overrides, f"study={study}"])
    return tracker_for(cfg) if cfg.logger.name == "mlflow" else None


@dataclass
class Expected:
    """One configuration the study asks for."""

    overrides: list[str]
    cfg: DictConfig
    grid: dict = field(default_factory=dict)
    sweep: int = 0  #: which of its stage's sweeps (multirun commands) runs it
    hash: str = field(init=False)

    def __post_init__(self):
        self.hash = config_hash(self.cfg)


def expand(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of Hydra sweep overrides: ['a=1,2', 'b=x'] -> [['a=1','b=x'], ['a=2','b=x']]."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


def expected_runs(study: dict, root: str, extra: list[str] = (), stage: str = "compare",
                  chosen: dict[str, list[str]] | None = None) -> list[Expected]:
    """Every (grid point x seed) of the study's stage (see :func:`sweeps`), composed as the
    sweep's jobs compose it."""
    from hydra import compose, initialize_config_dir

    from seqbench.validate import CONF_DIR, check_keys, check_overrides

    out = []
    # hydra.* (the launcher's settings) are not in a job's config: checked by the sweep's check_launcher
    extra = [o for o in extra if not o.lstrip("+~").startswith("hydra")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for i, s in enumerate(sweeps(study, stage, chosen)):
            grid, sweep = s.grid, [*s.overrides, *extra]
            check_base(grid, sweep, root)
            for point in expand(sweep):
                check_overrides(point)
                try:
                    cfg = compose("config", overrides=[f"paths.root={root}", *point, f"study={study['name']}"])
                except Exception as e:  # Hydra's composition error (unknown key, bad type): one line
                    try:
                        check_keys(point)
                    except ConfigError as unknown:
                        e = unknown
                    raise ConfigError(f"grid '{grid.get('name', '')}': {str(e).splitlines()[0]}") from None
                out.append(Expected(point, cfg, grid, i))
    return out


def check_base(grid: dict, sweep: list[str], root: str) -> None:
    """Hydra's multirun first composes a grid's base config from its non-sweep overrides alone
    (every swept group at its default), so ``tokenizer=bpe,word tokenizer.vocab_size=1000`` fails
    there (the default char tokenizer has no vocab_size) even though every job would compose."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(sweep)
    # hydra.* (the launcher's partition, CPUs, ...) is not in the composed job config: check_launcher
    base = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    from seqbench.validate import check_keys

    try:
        check_keys(sweep)  # a misspelt key is that, whatever the base composition says
    except ConfigError as e:
        raise ConfigError(f"grid '{grid.get('name', '')}': {e}") from None
    try:
        compose("config", overrides=[f"paths.root={root}", *base])
    except Exception as e:
        raise ConfigError(f"grid '{grid.get('name', '')}': {str(e).splitlines()[0]} in the base config "
                          f"Hydra composes without the swept values ({', '.join(swept)} at their defaults); "
                          f"split the grid so that override applies to one option") from None
