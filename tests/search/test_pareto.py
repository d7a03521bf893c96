"""Pareto front, hypervolume and table on hand-made studies (no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from search.pareto import format_table, front_rows, hypervolume_2d, pareto_front
from search.space import Constraint

OBJ = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def _trial(m: float, lat: float, h: str, params_m: float = 2.0, **attrs: object) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.COMPLETE, values=[m, lat], params={"x": h}, distributions={"x": CategoricalDistribution([h])},
        user_attrs={"hash": h, "blocks": "C3k2", "metrics": {"map50_95": m, "latency_ms": lat, "params_m": params_m},
                    **attrs},
    )


def _study(trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials(trials)
    return study


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
