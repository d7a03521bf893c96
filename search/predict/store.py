"""Where a target's latency model and its validation live: ``<studies>/latency_models/<target>.json`` and beside it
``<target>.validation.json`` (found by the target, so ``search.run --latency-source predicted`` needs no path)."""

from __future__ import annotations

import json
from pathlib import Path

from trainers.latency.setting import LatencySetting

__all__ = ["budget_margin_pct", "model_path", "validation_path"]


def model_path(studies_dir: str | Path, setting: LatencySetting) -> Path:
    """The cost model file of ``setting``'s target in the studies folder."""
    return Path(studies_dir) / "latency_models" / (setting.target.replace("/", "_") + ".json")


def validation_path(model_file: str | Path) -> Path:
    """The validation report written beside a cost model file."""
    path = Path(model_file)
    return path.with_name(path.stem + ".validation.json")


def budget_margin_pct(model_file: str | Path) -> float:
    """The held-out 95th-percentile over-prediction (%) of the model's validation: the margin a latency budget
    keeps so that the predictor never prunes a model that is really within it. ``ValueError`` (one line) when
    the model has no validation yet."""
    path = validation_path(model_file)
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"latency model {str(model_file)!r} has no validation ({path.name}): run python -m "
                         f"search.latency_model validate first") from e
    return max(0.0, float(rows["predictor"]["p95_over_pct"]))
