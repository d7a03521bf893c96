"""The :class:`Objective` protocol: one way of scoring an architecture, which both drivers take.

A driver (the Optuna ask/tell loop, :mod:`search.engine.optuna_driver`; the Ray Tune searcher,
:mod:`search.engine.ray_searcher`) asks Optuna for a trial and hands it to an objective; it never
imports one. An objective samples the trial's architecture (:meth:`Objective.sample`, in the
driver's process) and evaluates it (:meth:`Objective.evaluate`, on whatever worker runs it),
writing what it learns on the trial and returning an :class:`Outcome` the driver tells the study.
:class:`~search.engine.per_trial.PerTrialObjective` trains every architecture; a one-shot supernet
or a latency predictor is another class beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from search.space import SearchSpace
from trainers.model.architecture import Architecture

__all__ = ["Objective", "Outcome", "describe"]


@dataclass(frozen=True)
class Outcome:
    """How a trial ends: its state, values (COMPLETE only) and a one-line note for the log."""

    state: TrialState
    values: list[float] | None
    note: str


class Objective(Protocol):
    """One way of scoring an architecture: sample it on a trial, then evaluate it.

    Implementations must pickle (Ray sends them to its workers) and write everything they know on
    the trial (user attrs, records) before returning; the driver only tells the study the outcome.
    """

    space: SearchSpace

    def sample(self, trial: optuna.Trial) -> Architecture | Outcome:
        """The trial's architecture, recorded on it; or the outcome of a trial that has none (failed)."""
        ...

    def evaluate(self, study: optuna.Study, trial: optuna.Trial, prefix: str = "",
                 arch: Architecture | None = None) -> Outcome:
        """Score the trial's architecture (``arch`` when sampled already, else sampled here)."""
        ...


def describe(trial: Any) -> str:
    """Short label of a trial for progress lines."""
    return f"trial {trial.number} [{trial.user_attrs.get('hash', '?')}] {trial.user_attrs.get('blocks', '')}"
