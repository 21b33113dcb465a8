"""Per-cell tuning in a study: the tune stage's runs, the choice on validation, and the comparison
at each grid point's own chosen setting (seqbench.study)."""

from __future__ import annotations

import math

import pytest
import yaml

from seqbench.errors import ConfigError
from seqbench.study import choose, expected_runs, load_study, point_key, sweeps

STUDY = {"name": "t", "seeds": [0, 1], "common": ["trainer.max_epochs=2"],
         "tuning": {"seed": 7, "overrides": ["trainer.max_epochs=1"]},
         "grids": [{"name": "g", "overrides": ["model=rnn,gru"], "tune": {"optimizer.lr": [0.001, 0.01]}},
                   {"name": "h", "overrides": ["model=lstm"]}]}


def test_tune_stage_is_every_point_times_every_candidate_at_the_tuning_seed(tmp_path):
    tuned = expected_runs(STUDY, str(tmp_path), stage="tune")
    got = sorted((e.cfg.model.name, e.cfg.optimizer.lr, e.cfg.seed, e.cfg.trainer.max_epochs, e.cfg.stage)
                 for e in tuned)
    assert got == [("gru", 0.001, 7, 1, "tune"), ("gru", 0.01, 7, 1, "tune"),
                   ("rnn", 0.001, 7, 1, "tune"), ("rnn", 0.01, 7, 1, "tune")]  # tuning overrides win
    assert [s.stage for s in sweeps(STUDY, "tune")] == ["tune"]  # untuned grid h has no tuning runs


def test_each_point_is_compared_at_its_own_best_candidate(tmp_path):
    tuned = expected_runs(STUDY, str(tmp_path), stage="tune")
    # validation objective: rnn prefers the small lr, gru the large one
    best = {("rnn", 0.001): 1.0, ("rnn", 0.01): 2.0, ("gru", 0.001): 1.5, ("gru", 0.01): 0.5}
    objective = {e.hash: best[(e.cfg.model.name, e.cfg.optimizer.lr)] for e in tuned}
    choice = choose(STUDY, tuned, objective)
    assert choice["g: model=rnn"] == {"objective": "val/best_loss", "direction": "min",
                                      "candidates": {"optimizer.lr=0.001": 1.0, "optimizer.lr=0.01": 2.0},
                                      "chosen": ["optimizer.lr=0.001"]}
    assert choice["g: model=gru"]["chosen"] == ["optimizer.lr=0.01"]
    compare = expected_runs(STUDY, str(tmp_path), chosen={k: v["chosen"] for k, v in choice.items()})
    got = sorted((e.cfg.model.name, e.cfg.optimizer.lr, e.cfg.seed, e.cfg.stage) for e in compare)
    assert got == [("gru", 0.01, 0, "compare"), ("gru", 0.01, 1, "compare"), ("lstm", 0.003, 0, "compare"),
                   ("lstm", 0.003, 1, "compare"), ("rnn", 0.001, 0, "compare"), ("rnn", 0.001, 1, "compare")]
    assert {e.hash for e in compare}.isdisjoint(objective)  # a tuning run never stands in for a result
    # one multirun per chosen setting: rnn at 0.001, gru at 0.01 (different settings: two); both at
    # the same setting: one sweep over the cells
    assert [s.overrides[:2] for s in sweeps(STUDY, chosen={k: v["chosen"] for k, v in choice.items()})][:2] == \
        [["model=rnn", "optimizer.lr=0.001"], ["model=gru", "optimizer.lr=0.01"]]
    same = {k: ["optimizer.lr=0.01"] for k in choice}
    assert sweeps(STUDY, chosen=same)[0].overrides[:2] == ["model=rnn,gru", "optimizer.lr=0.01"]


def test_the_objective_follows_the_selection_metric(tmp_path):
    """A grid selecting on accuracy is tuned on val/best_accuracy, highest wins; a study's explicit
    ``tuning.objective``/``direction`` overrides that."""
    from seqbench.report.tuning import tuning_section

    study = {"name": "t", "seeds": [0], "grids": [{"name": "c", "overrides": ["task=classify", "data=sst2", "model=gru",
                                                                             "selection=accuracy"],
                                                   "tune": {"optimizer.lr": [0.001, 0.01]}}]}
    tuned = expected_runs(study, str(tmp_path), stage="tune")
    accuracy = {e.hash: {0.001: 0.70, 0.01: 0.80}[e.cfg.optimizer.lr] for e in tuned}
    (entry,) = choose(study, tuned, accuracy).values()
    assert (entry["objective"], entry["direction"], entry["chosen"]) == ("val/best_accuracy", "max", ["optimizer.lr=0.01"])
    assert "highest val/best_accuracy wins" in "\n".join(tuning_section(study, choose(study, tuned, accuracy)))
    fixed = {**study, "tuning": {"objective": "val/best_f1", "direction": "min"}}
    (entry,) = choose(fixed, tuned, accuracy).values()
    assert (entry["objective"], entry["chosen"]) == ("val/best_f1", ["optimizer.lr=0.001"])


def test_a_bad_tuning_direction_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "tuning": {"objective": "val/best_loss", "direction": "lowest"}}))
    with pytest.raises(ConfigError, match=r"^unknown tuning.direction 'lowest'; valid choices: max, min$"):
        load_study(str(path))


def test_a_point_without_finished_candidates_is_not_chosen(tmp_path):
    tuned = expected_runs(STUDY, str(tmp_path), stage="tune")
    choice = choose(STUDY, tuned, {e.hash: 1.0 for e in tuned if e.cfg.model.name == "gru"})
    assert "chosen" not in choice["g: model=rnn"] and math.isnan(choice["g: model=rnn"]["candidates"]["optimizer.lr=0.01"])
    assert point_key(STUDY["grids"][0], ["model=gru", "seed=3", "optimizer.lr=1"]) == "g: model=gru"


def test_a_key_both_tuned_and_set_is_refused(tmp_path):
    bad = {**STUDY, "grids": [{"name": "g", "overrides": ["model=rnn", "optimizer.lr=0.1"],
                               "tune": {"optimizer.lr": [0.001, 0.01]}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="grid 'g' tunes optimizer.lr and also sets it"):
        load_study(str(path))


def test_tuned_sweep_end_to_end_chooses_on_validation_and_reports_it(tmp_path):
    """A real tiny tuned study: the tune stage's runs, each cell compared at the learning rate
    with its lowest val/best_loss, both stages nested under the study's parent, and the report's
    Tuning section naming the choice. The grid that tunes nothing starts with the tuning (it waits
    for no choice), and only once; the tuned grid's comparison once its tuning runs have ended."""
    from test_sweep import TINY_COMMON, parent_run, runs, seqbench

    common = [o for o in TINY_COMMON if not o.startswith("trainer.max_epochs")] + ["trainer.max_epochs=1"]
    study = tmp_path / "tuned.yaml"
    study.write_text(yaml.safe_dump({"name": "tuned", "seeds": [0], "common": common,
                                     "grids": [{"name": "g", "overrides": ["model=gru"],
                                                "tune": {"optimizer.lr": [0.0003, 0.03]}},
                                               {"name": "h", "overrides": ["model=rnn"]}]}))
    p = seqbench("seqbench.sweep", str(study), "--jobs", "2", root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "== tuned: 2 tuning + 2 comparison configurations" in p.stdout
    assert "== tuned: 4/4 configurations FINISHED, 0 failed, 0 missing" in p.stdout
    lines = p.stdout.splitlines()
    started = [line for line in lines if line.startswith(("== tuned: tune: ", "== tuned: compare: "))]
    # h waits for no choice: queued with the tuning; g's comparison once g's tuning has ended
    assert started == ["== tuned: tune: g", "== tuned: compare: h", "== tuned: compare: g: "], p.stdout
    chosen_at = next(k for k, line in enumerate(lines) if line.startswith("== tuned: tuned g:"))
    assert chosen_at < lines.index("== tuned: compare: g: ")
    client, parent = parent_run(tmp_path, "tuned")
    _, all_runs = runs(tmp_path, "tuned")
    tuning = [r for r in all_runs if r.data.tags.get("stage") == "tune"]
    compare = [r for r in all_runs if "stage" not in r.data.tags]
    assert len(tuning) == 2 and len(compare) == 2 and all(r.data.params["seed"] == "100" for r in tuning)
    assert sorted(r.data.tags["model"] for r in compare) == ["gru", "rnn"]
    (compared,) = [r for r in compare if r.data.tags["model"] == "gru"]
    assert compared.info.start_time >= max(r.info.end_time for r in tuning)   # after its tuning runs
    for model in ("gru",):
        mine = {float(r.data.params["optimizer.lr"]): r.data.metrics["val/best_loss"]
                for r in tuning if r.data.tags["model"] == model}
        (run,) = [r for r in compare if r.data.tags["model"] == model]
        assert float(run.data.params["optimizer.lr"]) == min(mine, key=mine.get)
        chosen = float(run.data.params["optimizer.lr"])
        assert any(line.startswith("== tuned: tuned g:") and line.endswith(f"optimizer.lr={chosen}")
                   for line in p.stdout.splitlines()), p.stdout
    p = seqbench("seqbench.report", str(study), root=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    md = (tmp_path / "reports" / "tuned" / "report.md").read_text()
    assert "## Tuning" in md and "\n| g:" in md and "lr tuned per row" in md


def test_a_sweep_whose_choice_fails_ends_failed_with_the_reason_after_the_runs_in_flight(tmp_path, monkeypatch,
                                                                                         capsys):
    """Choosing a tuned grid's settings fails (here: the tuning runs cannot be read) after its
    tuning multirun: nothing more starts (neither the comparison nor the grid queued behind it),
    no run is left RUNNING, the parent run ends FAILED with the reason, and the sweep exits 1, one line."""
    import seqbench.sweep as sweep
    from seqbench.errors import DataError
    from test_sweep import TINY_COMMON, parent_run, runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQBENCH_ROOT", str(tmp_path))
    common = [o for o in TINY_COMMON if not o.startswith("trainer.max_epochs")]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"name": "broken", "seeds": [0], "common": common,
                                    "tuning": {"overrides": ["trainer.max_epochs=1"]},
                                    "grids": [{"name": "g", "overrides": ["model=gru"],
                                               "tune": {"optimizer.lr": [0.0003, 0.03]}},
                                              {"name": "h", "overrides": ["model=rnn", "model.num_layers=1,2"]}]}))

    def unreadable(*args, **kwargs):
        raise DataError("the tuning runs of seqbench/broken could not be read")

    monkeypatch.setattr(sweep, "resolve", unreadable)
    assert sweep.run_study(load_study(str(path)), jobs=2) == 1
    err = capsys.readouterr().err
    assert "DataError: the tuning runs of seqbench/broken could not be read; starting no more multiruns" in err
    assert err.rstrip().endswith("seqbench.sweep: error: the tuning runs of seqbench/broken could not be read")
    client, parent = parent_run(tmp_path, "broken")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failure_reason"] == "DataError: the tuning runs of seqbench/broken could not be read"
    _, jobs = runs(tmp_path, "broken")
    assert all(r.info.status == "FINISHED" for r in jobs)       # none left RUNNING by an early exit
    assert sorted((r.data.tags["model"], r.data.tags.get("stage", "compare")) for r in jobs) == \
        [("gru", "tune"), ("gru", "tune")]                       # h, queued behind g's tuning: never started


def test_fanova_importance_names_the_setting_that_matters():
    """Tuning objectives that depend on the cell only (lr adds noise): fANOVA gives the cell almost
    all of the variance; with fewer than two varying settings there is nothing to attribute."""
    from seqbench.report.tuning import importance_section

    level = {"rnn": 1.0, "lstm": 0.5, "gru": 0.4}
    choice = {f"copy: model={m}": {"candidates": {f"optimizer.lr={lr}": level[m] + 0.001 * i
                                                  for i, lr in enumerate((0.003, 0.01, 0.03))}}
              for m in level}
    (row,) = [line for line in "\n".join(importance_section(choice)).splitlines() if line.startswith("| copy |")]
    shares = dict(part.rsplit(" ", 1) for part in row.split("|")[3].strip().split(", "))
    assert float(shares["model"]) > 0.95 > float(shares["optimizer.lr"])
    assert importance_section({"copy: model=rnn": choice["copy: model=rnn"]}) == []
