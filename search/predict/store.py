"""Where a target's latency model and its validation live: ``<studies>/latency_models/<target>.json`` and beside it
``<target>.validation.json`` (found by the target, so ``search.run --latency-source predicted`` needs no path)."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.latency.setting import LatencySetting

__all__ = ["GOAL_MAPE_PCT", "NOISE_FACTOR", "budget_margin_pct", "meets_goal", "model_path", "validation_path"]

GOAL_MAPE_PCT = 3.0  # issue 32: held-out error a predictor must reach ...
NOISE_FACTOR = 1.5  # ... or, where re-measuring itself is noisier, this many times the re-measure noise


def model_path(studies_dir: str | Path, setting: LatencySetting) -> Path:
    """The cost model file of ``setting``'s target in the studies folder."""
    return Path(studies_dir) / "latency_models" / (setting.target.replace("/", "_") + ".json")


def validation_path(model_file: str | Path) -> Path:
    """The validation report written beside a cost model file."""
    path = Path(model_file)
    return path.with_name(path.stem + ".validation.json")


def _rows(model_file: str | Path) -> dict:
    path = validation_path(model_file)
    try:
        rows: dict = json.loads(path.read_text())["rows"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"latency model {str(model_file)!r} has no validation ({path.name}): run python -m "
                         f"search.latency_model validate first") from e
    return rows


def meets_goal(model_file: str | Path) -> tuple[bool, str]:
    """Whether the model's held-out MAPE is within :data:`GOAL_MAPE_PCT`, or within :data:`NOISE_FACTOR` times
    the noise floor (the same architectures measured twice) where that floor is above it; and a one-line why.

    ``ValueError`` when the model has no validation.
    """
    rows = _rows(model_file)
    mape = float(rows["predictor"]["mape_pct"])
    noise = float(rows.get("noise floor", {}).get("mape_pct", 0.0))
    bound = max(GOAL_MAPE_PCT, NOISE_FACTOR * noise)
    why = (f"held-out MAPE {mape:.1f}% against a bound of {bound:.1f}% (max of {GOAL_MAPE_PCT:.0f}% and "
           f"{NOISE_FACTOR}x the re-measure noise, {noise:.1f}%)")
    return mape <= bound, why


def budget_margin_pct(model_file: str | Path) -> float:
    """The held-out 95th-percentile over-prediction (%) of the model's validation: the margin a latency budget
    keeps so that the predictor never prunes a model that is really within it. ``ValueError`` (one line) when
    the model has no validation yet."""
    return max(0.0, float(_rows(model_file)["predictor"]["p95_over_pct"]))
