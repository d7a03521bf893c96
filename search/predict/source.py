"""Where a run's trial latencies come from: ``--latency-source`` resolved against this target's latency model.

``measured`` needs nothing. ``predicted`` and ``predicted+confirm`` need the target's cost model (found by its
target in the studies folder, or ``--latency-model``), fit for this machine and validated: the validation's
95th-percentile over-prediction becomes the latency budget's margin; anything missing is one line, exit 2.
``auto`` (the default) becomes ``predicted+confirm`` where that model is there, fits and its validation meets
the goal (:func:`search.predict.store.meets_goal`), else ``measured``; one line says which and why. The model
file and its validation are read once.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from search.predict.store import budget_margin_pct, meets_goal, model_path
from search.study.config import RunConfig
from trainers.cli import fail, log

__all__ = ["resolve_latency_model"]


def resolve_latency_model(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its latency source resolved, the model's path and the budget margin set (see the module)."""
    from trainers.latency.predictor import CostModel, TargetConditions

    t = cfg.trial
    if t.latency_source == "measured":
        return cfg
    auto = t.latency_source == "auto"
    path = Path(t.latency_model) if t.latency_model else model_path(cfg.root, t.latency)
    if auto and not path.is_file():
        log(f"latency: measured (no latency model for this target at {path}; python -m search.latency_model fit "
            "and validate make one)")
        return cfg.with_trial(latency_source="measured")
    try:
        CostModel.load(path).check_target(TargetConditions.here(t.latency))
        margin = budget_margin_pct(path)
        good, why = meets_goal(path)
    except ValueError as e:
        if not auto:
            fail(f"--latency-source {t.latency_source}: {e}")
        log(f"latency: measured (latency model {path.name} not usable here: {e})")
        return cfg.with_trial(latency_source="measured")
    if auto:
        log(f"latency: {'predicted, the front confirmed by measurement' if good else 'measured'} (latency model "
            f"{path.name}: {why})")
        if not good:
            return cfg.with_trial(latency_source="measured")
    source = "predicted+confirm" if auto else t.latency_source
    return replace(cfg.with_trial(latency_source=source, latency_model=str(path.resolve())), latency_margin_pct=margin)
