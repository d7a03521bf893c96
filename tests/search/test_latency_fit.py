"""Sampling and scoring of the latency fit (:mod:`search.predict.fit`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from search.predict.fit import error_stats, sample_architectures, stats_table
from search.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]


def test_error_stats_are_the_textbook_figures() -> None:
    s = error_stats([1.08, 0.92, 2.0, 3.27], [1.0, 1.0, 2.0, 3.0])  # +8%, -8%, 0, +9%
    assert s["n"] == 4 and s["mape_pct"] == pytest.approx((8 + 8 + 0 + 9) / 4)
    assert s["max_err_pct"] == pytest.approx(9.0) and s["within_5pct"] == 0.25 and s["within_10pct"] == 1.0
    assert s["rmse_ratio"] == pytest.approx(math.sqrt((0.0064 + 0.0064 + 0 + 0.0729) / 4))
    assert s["p95_over_pct"] == pytest.approx(9.0) and s["p95_under_pct"] == pytest.approx(8.0)
    assert s["spearman_rho"] == pytest.approx(0.9486833, abs=1e-6) and -1 <= s["kendall_tau"] <= 1
    assert "predictor" in stats_table({"predictor": s})


def test_the_fit_set_holds_stock_and_corners_and_validation_never_a_fit_architecture() -> None:
    space = SearchSpace.load(REPO / "spaces" / "yolo26.yaml")
    fit = sample_architectures(space, 40, seed=0)
    assert fit[0] == space.baseline() and len({a.hash for a in fit}) == 40
    assert sample_architectures(space, 40, seed=0) == fit  # seeded
    held = sample_architectures(space, 30, seed=1000, exclude=frozenset(a.hash for a in fit), with_corners=False)
    assert len(held) == 30 and not {a.hash for a in held} & {a.hash for a in fit}
