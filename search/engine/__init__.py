"""How trials are scored and driven. Drivers take an Objective; they never import one.

- :mod:`search.engine.objective`: the Objective protocol, Outcome.
- :mod:`search.engine.per_trial`: PerTrialObjective: every architecture measured, then trained in its own process.
- :mod:`search.engine.optuna_driver`: the Optuna ask/tell loop with worker threads, then the report.
- :mod:`search.engine.ray_searcher`: the Ray Tune searcher over Optuna ask/tell.
- :mod:`search.engine.rungs`: multi-objective successive halving.
- :mod:`search.engine.runner`: the trial process: start, stream epochs, kill.
- :mod:`search.engine.warm_start`: teacher / init-from the baseline's checkpoint.
- :mod:`search.engine.interleaved`: the front re-measured interleaved with the baseline.
"""

__all__ = ["objective", "per_trial", "optuna_driver", "ray_searcher", "rungs", "runner", "warm_start", "interleaved"]
