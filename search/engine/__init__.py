"""How trials are scored and driven: the Objective protocol, the per-trial objective, the Optuna driver,
the Ray searcher, rungs."""
