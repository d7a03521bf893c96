"""Pareto front, hypervolume and table on hand-made studies (no training).

Noise-aware dominance: latencies whose 95% intervals overlap count as equal (see
:mod:`search.pareto.front`); the studies below are real SQLite files with reports carrying intervals.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from search.pareto import format_table, front_hypervolume, front_rows, hypervolume_2d, pareto_front
from search.pareto.report import NO_SPREAD_NOTE, NOISE_NOTE, beats_stock_line
from search.space import Constraint
from search.study.records import is_record, record_attrs
from trainers.latency.report import LatencyReport

OBJ = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def _trial(m: float, lat: float, h: str, params_m: float = 2.0, **attrs: object) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial as the objective records it: dict values are records, the rest user attrs."""
    records = {"metrics": {"map50_95": m, "latency_ms": lat, "params_m": params_m},
               **{k: v for k, v in attrs.items() if is_record(v)}}
    return create_trial(
        state=TrialState.COMPLETE, values=[m, lat], params={h: h}, distributions={h: CategoricalDistribution([h])},
        user_attrs={"hash": h, "blocks": "C3k2", **{k: v for k, v in attrs.items() if not is_record(v)}},
        system_attrs=record_attrs(records),
    )


def _report(median: float, ci: tuple[float, float] | None) -> LatencyReport:
    """A CPU latency report with the 95% interval ``ci`` of its median (``None``: an older report without one)."""
    return LatencyReport(median_ms=median, p90_ms=median * 1.05, mean_ms=median, cv=0.02, n=60, mode="eager",
                         device="cpu (x86_64, 2 cores)", dtype="float32", batch=1, imgsz=640, threads=1,
                         torch="2.14.1", fused=True, head="nms_free", ci_low_ms=ci[0] if ci else None,
                         ci_high_ms=ci[1] if ci else None, measured_at="2026-01-01T00:00:00+00:00")


def _timed(m: float, lat: float, ci: tuple[float, float] | None, h: str, **attrs: object) -> optuna.trial.FrozenTrial:
    """A trial whose ``latency`` record is a full report dict, as the objective records it."""
    return _trial(m, lat, h, latency={**_report(lat, ci).to_dict(), "cached": False}, **attrs)


def _study(trials: list[optuna.trial.FrozenTrial], storage: str | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage)
    study.add_trials(trials)
    return study


def _hashes(front: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.user_attrs["hash"] for t in front]


def _noisy_study(tmp_path: Path) -> optuna.Study:
    """The issue's case in a SQLite study: 86.06 vs 86.10 ms (0.05%) put a 0.19-mAP trial beside a 0.54 one."""
    return _study([
        _timed(0.50, 90.00, (89.0, 91.2), "base", is_baseline=True),
        _timed(0.54, 86.10, (85.0, 87.3), "good"),
        _timed(0.19, 86.06, (85.1, 87.2), "poor"),  # 0.05% faster: inside the noise
        _timed(0.10, 40.00, (39.5, 40.6), "tiny"),  # clearly faster (intervals apart), far less accurate
    ], storage=f"sqlite:///{tmp_path / 'noisy.db'}")


def test_hypervolume_of_two_points_is_the_union_of_their_rectangles() -> None:
    # points (map, lat): (0.5, 2) and (0.8, 6); ref (0, 10): 0.5*(6-2) + 0.8*(10-6) = 2 + 3.2
    assert hypervolume_2d([(0.5, 2.0), (0.8, 6.0)], (0.0, 10.0)) == pytest.approx(5.2)
    # a dominated point adds nothing
    assert hypervolume_2d([(0.5, 2.0), (0.8, 6.0), (0.4, 7.0)], (0.0, 10.0)) == pytest.approx(5.2)
    # points beyond the reference add nothing
    assert hypervolume_2d([(0.9, 11.0)], (0.0, 10.0)) == 0.0


def test_front_drops_dominated_infeasible_and_duplicate_architectures() -> None:
    study = _study([
        _trial(0.50, 2.0, "a", is_baseline=True),
        _trial(0.60, 3.0, "b"),
        _trial(0.55, 3.5, "c"),  # dominated by b
        _trial(0.90, 1.0, "d", params_m=9.0),  # best, but breaks params_m <= 4
        _trial(0.60, 3.0, "b"),  # same architecture again: listed once
    ])
    front = pareto_front(study, OBJ, [Constraint("params_m", "<=", 4.0)])
    assert [t.user_attrs["hash"] for t in front] == ["a", "b"]
    assert [t.user_attrs["hash"] for t in pareto_front(study, OBJ)] == ["d"]


def test_table_shows_deltas_against_the_baseline() -> None:
    study = _study([_trial(0.50, 2.0, "a", is_baseline=True), _trial(0.60, 3.0, "b")])
    base = study.trials[0]
    rows = front_rows(pareto_front(study, OBJ), base)
    assert rows[1]["d_map_points"] == pytest.approx(10.0)
    assert rows[1]["latency_ratio"] == pytest.approx(1.5)
    text = format_table(rows)
    assert "+10.00" in text and "1.500" in text


def test_a_difference_inside_the_noise_does_not_put_a_far_less_accurate_trial_on_the_front(tmp_path: Path) -> None:
    study = _noisy_study(tmp_path)
    assert _hashes(pareto_front(study, OBJ, noise=False)) == ["tiny", "poor", "good"]
    assert _hashes(pareto_front(study, OBJ)) == ["tiny", "good"]  # "tiny": intervals apart, so it stays


def test_reports_without_intervals_compare_exactly(tmp_path: Path) -> None:
    study = _study([_timed(0.54, 86.10, None, "good"), _timed(0.19, 86.06, None, "poor"),
                    _timed(0.30, 86.08, (85.0, 87.2), "half")],  # an interval on one side only: exact too
                   storage=f"sqlite:///{tmp_path / 'old.db'}")
    assert _hashes(pareto_front(study, OBJ)) == ["poor", "half", "good"]


def test_equal_map_within_noise_keeps_the_lower_median_only() -> None:
    study = _study([_timed(0.40, 10.2, (10.0, 10.4), "slow"), _timed(0.40, 10.1, (9.9, 10.3), "fast")])
    assert _hashes(pareto_front(study, OBJ)) == ["fast"]


def test_every_trial_off_the_noise_aware_front_is_dominated_by_a_point_on_it() -> None:
    # a ~ b and b ~ c within noise, but c is clearly faster than a: "equal within noise" is not transitive.
    study = _study([_timed(0.60, 10.2, (10.0, 10.4), "a"), _timed(0.50, 9.9, (9.7, 10.1), "b"),
                    _timed(0.40, 9.6, (9.5, 9.8), "c")])
    assert _hashes(pareto_front(study, OBJ)) == ["c", "a"]  # b: as fast as a within noise, less accurate


def test_latency_overrides_rank_with_their_own_intervals(tmp_path: Path) -> None:
    study = _noisy_study(tmp_path)
    poor = next(t.number for t in study.trials if t.user_attrs["hash"] == "poor")
    apart = {poor: _report(70.0, (69.0, 71.0))}  # re-measured: clearly faster than "good" now
    assert _hashes(pareto_front(study, OBJ, latency=apart)) == ["tiny", "poor", "good"]
    rows = front_rows(pareto_front(study, OBJ, latency=apart), study.trials[0], apart)
    assert rows[1]["latency_ms"] == 70.0 and rows[1]["latency_ci"] == [69.0, 71.0]


def test_table_marks_latencies_within_the_noise_of_a_neighbour(tmp_path: Path) -> None:
    study = _noisy_study(tmp_path)
    rows = front_rows(pareto_front(study, OBJ, noise=False), study.trials[0])
    assert [r["within_noise"] for r in rows] == [False, True, True]
    assert rows[1]["latency_ci"] == [85.1, 87.2]
    text = format_table(rows)
    assert "86.06~" in text and "86.10~" in text and "40.00~" not in text
    assert "[85.10, 87.20]" in text and text.splitlines()[-2:] == [NOISE_NOTE, NO_SPREAD_NOTE]
    clean = format_table(front_rows(pareto_front(study, OBJ), study.trials[0]))
    assert "~" not in clean


def _stock_and_rivals() -> list[optuna.trial.FrozenTrial]:
    """Issue 34's case: 1.2 mAP points above stock, inside a seed spread of 2 points, is no win."""
    return [_timed(0.443, 90.0, (89.0, 91.2), "stock", is_baseline=True),
            _timed(0.455, 89.5, (88.5, 90.5), "close"),  # +1.2 points, latency within noise: a tie on both
            _timed(0.500, 95.0, (94.0, 96.0), "slower"),  # +5.7 points, but slower beyond noise: a trade-off
            _timed(0.480, 89.0, (88.0, 90.0), "clear"),  # +3.7 points beyond the spread, latency a tie: beats
            _timed(0.440, 40.0, (39.5, 40.6), "fast"),  # mAP a tie (-0.3 points), clearly faster: beats
            _timed(0.300, 30.0, (29.5, 30.5), "tiny")]  # faster, but -14 points: a trade-off


def test_beats_stock_only_beyond_the_seed_spread_and_the_latency_noise() -> None:
    study = _study(_stock_and_rivals())
    trials = {t.user_attrs["hash"]: t for t in study.trials}
    front = sorted(trials.values(), key=lambda t: t.values[1])  # every row, to judge each against stock
    rows = {r["hash"]: r for r in front_rows(front, trials["stock"], map_noise=0.02)}
    assert {h: r["beats_stock"] for h, r in rows.items()} == {
        "tiny": False, "fast": True, "clear": True, "close": False, "stock": False, "slower": False}
    assert [h for h, r in rows.items() if r["d_map_within_noise"]] == ["fast", "close", "stock"]
    assert all(r["map_spread"] == 0.02 for r in rows.values())
    text = format_table(list(rows.values()))
    assert "0.4550+-0.0200" in text and "+1.20~" in text and "+3.70 " in text
    assert text.splitlines()[-1].startswith("beats stock beyond the noise") and text.endswith(
        f"trials {[trials['fast'].number, trials['clear'].number]}")
    assert "+- the seed-to-seed spread" in text

    unmeasured = front_rows(front, trials["stock"])  # no audit yet: nothing is called a win
    assert all(r["beats_stock"] is None and "+-" not in format_table(unmeasured) for r in unmeasured)
    assert beats_stock_line(unmeasured) == NO_SPREAD_NOTE and format_table(unmeasured).endswith(NO_SPREAD_NOTE)
    assert beats_stock_line(front_rows(front, None, map_noise=0.02)) is None  # no baseline: no verdict
    wide = front_rows(front, trials["stock"], map_noise=0.2)  # a spread wider than every gain
    assert [r["hash"] for r in wide if r["beats_stock"]] == ["tiny", "fast"]
    assert "no front point beats stock" in beats_stock_line(front_rows(front[-2:], trials["stock"], map_noise=0.2))


def test_hypervolume_spread_puts_front_points_at_their_interval_ends() -> None:
    # baseline 10 ms -> reference 20 ms; one point mAP 0.5 at 10 [9, 11]: 0.5 * (20 - 10) = 5, ends 4.5 and 5.5
    study = _study([_timed(0.50, 10.0, (9.0, 11.0), "a", is_baseline=True)])
    hv = front_hypervolume(pareto_front(study, OBJ), study.trials[0])
    assert hv is not None
    assert (hv["hypervolume_low"], hv["hypervolume"], hv["hypervolume_high"]) == pytest.approx((4.5, 5.0, 5.5))


def test_hypervolume_spread_brackets_the_value_and_collapses_without_intervals(tmp_path: Path) -> None:
    study = _noisy_study(tmp_path)
    hv = front_hypervolume(pareto_front(study, OBJ), study.trials[0])
    assert hv is not None and hv["hypervolume_low"] < hv["hypervolume"] < hv["hypervolume_high"]
    old = _study([_timed(0.50, 10.0, None, "a", is_baseline=True), _timed(0.60, 12.0, None, "b")])
    hv_old = front_hypervolume(pareto_front(old, OBJ), old.trials[0])
    assert hv_old is not None
    assert hv_old["hypervolume_low"] == hv_old["hypervolume"] == hv_old["hypervolume_high"] == pytest.approx(
        0.5 * 2 + 0.6 * 8)
