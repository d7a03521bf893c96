"""``--teacher baseline`` / ``--init-from baseline``: the study's own trained stock model serves every trial.

A user without pretrained weights still gets distillation or a warm start: trial 0 (the stock
baseline every study trains first) is the teacher or the initialisation of the trials after it.
The baseline itself trains plain. A trial that starts while another worker still trains the
baseline waits for it; a baseline that ended without weights fails the trial with that reason.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from optuna.trial import TrialState

from trainers.train.results import TrialSettings
from trainers.train.teacher import BASELINE

POLL_S = 5.0


def is_baseline(trial: Any) -> bool:
    """Whether ``trial`` (running or frozen) is the study's stock baseline."""
    return bool(trial.user_attrs.get("baseline"))


def baseline_weights(study: Any, timeout_s: float | None = None, poll_s: float = POLL_S) -> str:
    """The checkpoint of the study's baseline trial, waiting while it trains; ``ValueError`` if it has none."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        base = next((t for t in study.get_trials(deepcopy=False) if is_baseline(t)), None)
        if base is not None and base.state == TrialState.COMPLETE and base.user_attrs.get("weights"):
            return str(base.user_attrs["weights"])
        if base is None or base.state not in (TrialState.RUNNING, TrialState.WAITING):
            state = "missing" if base is None else base.state.name
            raise ValueError(f"'{BASELINE}' asked for, but the baseline trial is {state} with no weights")
        if deadline is not None and time.monotonic() >= deadline:
            raise ValueError(f"'{BASELINE}' asked for, but the baseline trial {base.number} is still "
                             f"{base.state.name} after {timeout_s:g} s")
        time.sleep(poll_s)


def resolve_baseline(study: Any, trial: Any, settings: TrialSettings, timeout_s: float | None = None) -> TrialSettings:
    """``settings`` with ``baseline`` replaced by the baseline's checkpoint (the baseline trial itself: none).

    ``trial``: the trial being set up, or ``None`` (a retrain, which is never the baseline).
    """
    teacher, init_from = settings.teacher, settings.init_from
    if BASELINE not in (teacher, init_from):
        return settings
    weights = None if trial is not None and is_baseline(trial) else baseline_weights(study, timeout_s)
    return replace(settings, teacher=weights if teacher == BASELINE else teacher,
                   init_from=weights if init_from == BASELINE else init_from)
