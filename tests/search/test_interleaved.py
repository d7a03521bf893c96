"""The interleaved re-measure that ends a search: which trials, what is recorded, what is refreshed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from search_helpers import STALE_AT, TINY_SPACE, TinyRun, latency_report, load, run_search

from search.engine import interleaved
from search.engine.interleaved import last_remeasure, remeasure_candidates, remeasure_front
from search.pareto import pareto_front
from search.study.config import RunConfig
from search.study.records import read_record, record_attrs
from search.study.targets import TARGET_PREFIX, read_target, target_of
from trainers.latency.measure import LatencyCache, cache_key
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.train.results import TrialSettings

OBJ = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def _trial(m: float, lat: float, ci: tuple[float, float], h: str, **attrs: object) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, values=[m, lat], params={h: h},
                        distributions={h: CategoricalDistribution([h])}, user_attrs={"hash": h, **attrs},
                        system_attrs=record_attrs({"architecture": {"stub": h},
                                                   "latency": latency_report(lat, ci).to_dict(),
                                                   "metrics": {"map50_95": m, "latency_ms": lat}}))


def _sqlite_study(tmp_path: Path, trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}")
    study.add_trials(trials)
    return study


def test_candidates_are_the_baseline_the_front_and_trials_within_noise_of_it(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path, [
        _trial(0.50, 95.0, (94.0, 96.0), "base", baseline=True),  # dominated by "good", re-measured as reference
        _trial(0.54, 86.1, (85.0, 87.3), "good"),  # the front
        _trial(0.19, 86.0, (85.1, 87.2), "poor"),  # off the front by noise: could join with a better figure
        _trial(0.20, 99.0, (98.0, 100.0), "slow"),  # clearly slower and less accurate: not measured again
        _trial(0.54, 86.1, (85.0, 87.3), "good"),  # the same architecture again: measured once
    ])
    assert [t.user_attrs["hash"] for t in pareto_front(study, OBJ)] == ["good"]
    assert [t.number for t in remeasure_candidates(study, OBJ)] == [0, 1, 2]


def test_candidates_are_capped_keeping_the_front_then_the_least_dominated(tmp_path: Path) -> None:
    # a one-shot study: 6 trials on the front, 24 whose latency intervals overlap every front point's
    front = [_trial(0.30 + 0.02 * i, 50.0 + i, (49.8 + i, 50.2 + i), f"f{i}") for i in range(6)]
    near = [_trial(0.10 + 0.005 * i, 58.0, (45.0, 60.0), f"n{i}") for i in range(24)]
    study = _sqlite_study(tmp_path, [_trial(0.05, 59.0, (45.0, 60.0), "base", baseline=True), *near, *front])
    picked = [t.user_attrs["hash"] for t in remeasure_candidates(study, OBJ, limit=10)]
    assert picked == ["base", *(f"f{i}" for i in range(6)), "n23", "n22", "n21"]  # the best mAP at 58 ms first
    assert len(remeasure_candidates(study, OBJ, limit=None)) == 31
    thinned = [t.user_attrs["hash"] for t in remeasure_candidates(study, OBJ, limit=4)]
    assert thinned == ["base", "f0", "f2", "f5"] or thinned == ["base", "f0", "f3", "f5"]  # both ends of the front


def test_a_trial_the_new_figures_bring_onto_the_front_is_measured_with_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _sqlite_study(tmp_path, [
        _trial(0.50, 95.0, (94.0, 96.0), "base", baseline=True),
        _trial(0.54, 86.1, (85.0, 87.3), "good"),
        _trial(0.30, 90.0, (89.5, 90.5), "fast"),  # dominated by "good" on the trials' own figures
    ])
    # "good" was measured in a fast spell: together with the others it is slower than "fast"'s own figure
    truth = {"base": 100.0, "good": 92.0, "fast": 91.0}
    passes: list[list[int]] = []

    def fake_measure(candidates: list[optuna.trial.FrozenTrial], *_: object) -> list[LatencyReport]:
        passes.append([t.number for t in candidates])
        return [latency_report(m, (m - 0.4, m + 0.4), at=f"run {len(passes)}", mode="eager interleaved x20")
                for m in (truth[t.user_attrs["hash"]] for t in candidates)]

    monkeypatch.setattr(interleaved, "_measure", fake_measure)
    cache = tmp_path / "cache.json"
    cfg = RunConfig(
        study=study.study_name,
        storage="",
        root=str(tmp_path),
        space_file="",
        trial=TrialSettings(data="", out="", nc=3, latency=LatencySetting(device="cpu"), latency_cache=str(cache)),
    )
    figures = remeasure_front(study, cfg)
    assert passes == [[0, 1], [0, 1, 2]]
    assert {n: f.median_ms for n, f in figures.items()} == {0: 100.0, 1: 92.0, 2: 91.0}
    assert {f.measured_at for f in figures.values()} == {"run 2"}
    assert last_remeasure(study, target_of(latency_report(1.0, (1.0, 1.0)))) == figures
    assert [t.user_attrs["hash"] for t in pareto_front(study, OBJ, latency=figures)] == ["fast", "good"]
    key = cache_key(LatencySetting(imgsz=640, device="cpu", dtype="auto", threads=1), "fast")
    assert LatencyCache(cache).get(key) == figures[2]
    assert remeasure_front(study, cfg) == figures and len(passes) == 2  # a finished study: measured once

    monkeypatch.setattr(interleaved, "MAX_PASSES", 1)  # a study whose last re-measure stopped before "fast" joined
    (tmp_path / "capped").mkdir()
    capped = _sqlite_study(tmp_path / "capped", [
        _trial(0.50, 95.0, (94.0, 96.0), "base", baseline=True), _trial(0.54, 86.1, (85.0, 87.3), "good"),
        _trial(0.30, 90.0, (89.5, 90.5), "fast")])
    cfg = replace(cfg, study=capped.study_name)
    passes.clear()
    first = remeasure_front(capped, cfg)
    assert passes == [[0, 1]] and set(first) == {0, 1}
    assert remeasure_front(capped, cfg, reuse=True) == first and len(passes) == 1  # the figures ranked on: reused
    remeasure_front(capped, cfg)
    assert passes == [[0, 1], [0, 1]]  # without reuse: "fast" would join, so the front is measured again


@pytest.mark.slow
def test_search_ends_with_an_interleaved_remeasure_recorded_cached_and_ranked(tiny_run: TinyRun) -> None:
    # the run started with the stock model looking 100x slower than it is, a cache entry from an old study
    tmp_path, r, key, stale = tiny_run.root, tiny_run.result, tiny_run.stale_key, tiny_run.stale
    cache_path = tmp_path / "studies" / "latency_cache.json"
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "tiny")
    base = study.trials[0]
    assert read_record(base, "latency")["median_ms"] == 1000.0 and read_record(base, "latency")["cached"] is True
    own_front = [t.number for t in pareto_front(study, OBJ)]
    assert 0 not in own_front and own_front, "on its stale figure the baseline is off the front"

    target = target_of(stale)
    figures = read_target(study, target)
    summary = json.loads((tmp_path / "studies" / "tiny" / "pareto.json").read_text())
    final_front = [row["trial"] for row in summary["front"]]
    assert {0, *own_front, *final_front} <= set(figures)
    assert summary["latency_replaced"] == sorted(figures)
    assert len({f.measured_at for f in figures.values()}) == 1  # measured together
    for f in figures.values():
        assert f.n == 60 and "interleaved" in f.mode and f.ci_low_ms is not None
        assert f.ci_low_ms <= f.median_ms <= (f.ci_high_ms or 0)
    assert figures[0].median_ms < 100  # the baseline's real figure replaced the stale one in the ranking
    for row in summary["front"]:
        assert row["latency_ms"] == figures[row["trial"]].median_ms
        assert row["latency_ci"] == [figures[row["trial"]].ci_low_ms, figures[row["trial"]].ci_high_ms]
    hv = summary["hypervolume"]
    assert hv["hypervolume_low"] <= hv["hypervolume"] <= hv["hypervolume_high"]
    assert "within latency noise" in r.stdout and "re-measured together (interleaved)" in r.stdout
    assert "latency re-measure round 20/20" in r.stderr

    cache = LatencyCache(cache_path)
    refreshed = cache.get(key)
    assert refreshed is not None and refreshed.measured_at != STALE_AT and refreshed == figures[0]
    for n, f in figures.items():
        t = study.trials[n]
        assert (
            cache.get(cache_key(LatencySetting(imgsz=64, device="cpu", dtype="auto", threads=1), t.user_attrs["hash"]))
            == f
        )

    again = run_search(tmp_path, TINY_SPACE, *tiny_run.args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "re-measured together before" in again.stderr and "using those figures" in again.stderr
    assert "latency re-measure round" not in again.stderr
    assert load(tmp_path, "tiny").user_attrs[TARGET_PREFIX + target] == study.user_attrs[TARGET_PREFIX + target]
