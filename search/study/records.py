"""A trial's records: the one place its machine-readable data is written and read.

Optuna keeps two sets of attributes per trial. optuna-dashboard shows the *user* attrs in its
trial table, one column each, so they hold only short values people scan: ``hash``,
``blocks``, ``params``, ``gflops``, the one-line ``latency``, ``weights``, ``fail_kind`` and
the like (README, "What a run produces"). Records, the JSON objects and arrays programs read
(the architecture, the full latency report, ``metrics``, the per-epoch mAP curves, rung
decisions, ``versions``), are trial *system* attrs named ``repnas:<key>``, which the dashboard
does not show; people read them as the trial's artifacts (:mod:`search.study.artifacts`).

Studies written before records existed kept them as user attrs: :func:`read_record` falls back
to the user attr of the same key when that holds a JSON object or array. A record is never a
scalar, so a short user attr sharing a record's name (the one-line ``latency``) is never taken
for the record.

Optuna refuses to change a trial once it is told: records are written while the trial runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

RECORD_PREFIX = "repnas:"


def is_record(value: Any) -> bool:
    """Whether ``value`` has a record's shape: a JSON object or array."""
    return isinstance(value, (dict, list))


def write_record(trial: optuna.Trial, key: str, value: dict[str, Any] | list[Any]) -> None:
    """Store ``value`` (a JSON object or array) as the record ``key`` of the running ``trial``, replacing it.

    ``TypeError`` for a scalar: short values are user attrs (``trial.set_user_attr``).
    """
    if not is_record(value):
        raise TypeError(f"record {key!r} must be a JSON object or array, got {type(value).__name__}: "
                        "short values are user attrs")
    storage = trial.storage
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_system_attr(trial_id, RECORD_PREFIX + key, value)


def read_record(trial: FrozenTrial, key: str, default: Any = None) -> Any:
    """The record ``key`` of a frozen trial; else its legacy user attr ``key`` if that is a record; else ``default``."""
    system = trial.system_attrs
    if RECORD_PREFIX + key in system:
        return system[RECORD_PREFIX + key]
    legacy = trial.user_attrs.get(key)
    return legacy if is_record(legacy) else default


def records_of(trial: FrozenTrial) -> dict[str, Any]:
    """Every record of a frozen trial by key (legacy user-attr records included, records written since win)."""
    legacy = {k: v for k, v in trial.user_attrs.items() if is_record(v)}
    return {**legacy, **{k[len(RECORD_PREFIX):]: v for k, v in trial.system_attrs.items()
                         if k.startswith(RECORD_PREFIX)}}


def record_attrs(records: Mapping[str, Any]) -> dict[str, Any]:
    """The system attrs holding ``records``, for a trial built whole (``create_trial(system_attrs=...)``)."""
    for key, value in records.items():
        if not is_record(value):
            raise TypeError(f"record {key!r} must be a JSON object or array, got {type(value).__name__}")
    return {RECORD_PREFIX + key: value for key, value in records.items()}


RETRAINED_PREFIX = "retrained:"


def retrained_key(trial_number: int, variant: str | None = None) -> str:
    """The study user attr holding trial ``trial_number``'s retrain record (Optuna does not allow changing a finished
    trial): ``retrained:<n>`` is the latest (what export ships), ``retrained:<n>:<variant>`` (``plain`` or
    ``teacher``) each kind's."""
    return f"{RETRAINED_PREFIX}{trial_number}" + (f":{variant}" if variant else "")


def retrained_records(study: Any) -> dict[str, dict[str, Any]]:
    """Every retrain record on ``study`` by its key."""
    return {k: v for k, v in study.user_attrs.items() if k.startswith(RETRAINED_PREFIX)}
