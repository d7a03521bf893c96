"""How a trial is failed: one path for every driver (Optuna, Ray), dead workers, outages and timeouts.

A failed trial carries the user attrs ``fail_kind`` (a :class:`~trainers.train.results.FailKind` value)
and ``fail_reason``; a :attr:`~trainers.train.results.FailKind.WORKER_DIED` failure does not count as
finished, and the trial's parameters are queued again with ``retry_of`` (:func:`retry_attrs`).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from trainers.train.results import FailKind

__all__ = ["FailKind", "fail_trial", "record_failure", "retry_attrs"]


def retry_attrs(trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """User attrs of the re-queued copy of a trial whose worker died: ``retry_of`` (its number), and the
    baseline flags, so a re-run stock model is still the study's baseline."""
    kept = {k: v for k, v in trial.user_attrs.items() if k in ("baseline", "is_baseline")}
    return {**kept, "retry_of": trial.number}


def record_failure(trial: optuna.Trial, kind: FailKind, reason: str) -> None:
    """Write why ``trial`` failed (``fail_kind``, ``fail_reason``) on a trial its driver will tell as FAIL."""
    trial.set_user_attr("fail_kind", kind.value)
    trial.set_user_attr("fail_reason", reason)


def fail_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial, kind: FailKind, reason: str,
               requeue: dict[str, Any] | None = None, storage: BaseStorage | None = None) -> bool:
    """Record why ``trial`` failed, tell it FAIL and, with ``requeue`` (extra user attrs), queue its parameters
    again with :func:`retry_attrs`. A :class:`FrozenTrial` (another worker's, found stale) is failed through
    ``storage``; returns ``False`` when that worker told it first (nothing is queued then)."""
    if isinstance(trial, optuna.Trial):
        record_failure(trial, kind, reason)
        study.tell(trial, state=TrialState.FAIL)
    else:
        assert storage is not None, "another worker's trial is failed through the storage"
        tid = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                              trial.number)
        try:
            storage.set_trial_user_attr(tid, "fail_kind", kind.value)
            storage.set_trial_user_attr(tid, "fail_reason", reason)
            if not storage.set_trial_state_values(tid, TrialState.FAIL):
                return False
        except optuna.exceptions.UpdateFinishedTrialError:  # its worker told it meanwhile
            return False
    if requeue is not None:
        study.enqueue_trial(trial.params, user_attrs={**retry_attrs(trial), **requeue}, skip_if_exists=False)
    return True
