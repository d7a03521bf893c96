"""Preset points (spaces/presets): every file builds; bad ones fail in one line; a run evaluates them as trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from search_helpers import FIXED_SPACE, load, run_search

from search.space.errors import SpaceError
from search.space.presets import PRESETS_DIR, load_preset, preset_names, resolve_presets
from trainers.model.build import build_model


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_and_runs(name: str) -> None:
    preset = load_preset(name)
    assert preset.reference and not preset.architecture.is_baseline
    model = build_model(preset.architecture, nc=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)) is not None


def test_bad_presets_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"unknown preset 'nope', allowed: \["):
        load_preset("nope")
    (tmp_path / "bad.yaml").write_text("reference: x\narchitecture: {stages: {p3_backbone: {block: Foo}}}\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: architecture: .*block must be one of") as e:
        load_preset("bad", tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "noref.yaml").write_text("architecture: {stages: {}}\n")
    with pytest.raises(SpaceError, match="noref.yaml: reference: must name the design"):
        load_preset("noref", tmp_path)
    assert resolve_presets(False) == () and len(resolve_presets(True)) == len(list(PRESETS_DIR.glob("*.yaml")))


def test_a_run_evaluates_presets_beside_the_search_and_reports_them(tmp_path: Path, data: Path) -> None:
    name = "orepa_everywhere"  # about 4.2 M parameters in training form: breaks the constraint stock keeps
    space = FIXED_SPACE + "constraints: ['params_m <= 3.5']\n"
    r = run_search(tmp_path, space, "--include-presets", name, "--trials", "2", "--data", str(data), "--rungs", "")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "space")
    trials = study.get_trials()
    preset = [t for t in trials if t.user_attrs.get("preset") == name]
    assert len(trials) == 2 and len(preset) == 1 and preset[0].state == TrialState.COMPLETE
    assert preset[0].user_attrs["hash"] == load_preset(name).architecture.hash  # not in the space: still built
    assert not preset[0].params  # nothing sampled for it
    summary = json.loads((tmp_path / "studies" / "space" / "pareto.json").read_text())
    (row,) = summary["presets"]
    assert row["preset"] == name and row["trial"] == preset[0].number and row["latency_ratio"] > 0
    assert row["breaks"] == ["params_m <= 3.5"] and not row["on_front"]  # trained all the same, shown as infeasible
    assert {0, preset[0].number} <= set(summary["latency_replaced"])  # re-measured with stock
    assert f"{name:<20}" in r.stdout and study.user_attrs["run_config"]["presets"] == [name]


def test_a_failed_preset_is_enqueued_again_an_enqueued_one_is_not() -> None:
    import optuna

    from search.engine.optuna_driver import ensure_presets

    study = optuna.create_study(directions=["maximize", "minimize"])
    name = preset_names()[0]
    ensure_presets(study, [name])
    ensure_presets(study, [name])
    assert len(study.get_trials()) == 1  # waiting: not twice
    trial = study.ask()
    assert trial.user_attrs["preset"] == name
    study.tell(trial, state=TrialState.FAIL)
    ensure_presets(study, [name])
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["preset"] == name
    again = study.ask()
    study.tell(again, [0.1, 1.0])
    ensure_presets(study, [name])
    assert not study.get_trials(states=(TrialState.WAITING,))  # done once: a rerun does not train it again


def test_a_preset_tries_again_where_a_search_trial_reuses_a_failure() -> None:
    import optuna

    from search.engine.per_trial import reuses

    study = optuna.create_study(directions=["maximize", "minimize"])
    failed = study.ask()
    study.tell(failed, state=TrialState.FAIL)
    done = study.ask()
    study.tell(done, [0.1, 1.0])
    search_trial, preset_trial = study.ask(), study.ask()
    preset_trial.set_user_attr("preset", preset_names()[0])
    frozen_fail, frozen_done = study.trials[0], study.trials[1]
    assert reuses(search_trial, frozen_fail) and reuses(search_trial, frozen_done)
    assert not reuses(preset_trial, frozen_fail) and reuses(preset_trial, frozen_done)
