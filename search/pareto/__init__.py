"""The Pareto front of a study (:mod:`.front`), how it is reported (:mod:`.report`), and its command line."""

from __future__ import annotations

from search.pareto.front import (
    baseline_trial,
    blocks_label,
    front_hypervolume,
    hypervolume_2d,
    is_feasible,
    objective_values,
    pareto_front,
    trial_metrics,
)
from search.pareto.report import format_table, front_rows, write_report

__all__ = [
    "baseline_trial",
    "blocks_label",
    "format_table",
    "front_hypervolume",
    "front_rows",
    "hypervolume_2d",
    "is_feasible",
    "objective_values",
    "pareto_front",
    "trial_metrics",
    "write_report",
]
