"""What a stand-alone retrain of a study's trial leaves on the study: the ``retrained:<n>`` records.

Written by ``python -m search.retrain`` (one chosen architecture) and by the one-shot search's
retraining of its front (:mod:`search.engine.retrain_front`); read by export, the model card and the
Pareto report. Optuna does not change a told trial, so the records sit on the study, keyed by trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search.study.records import retrained_key
from trainers.train.results import TrialResult, TrialSettings


def retrained_record(result: TrialResult, settings: TrialSettings, out: Path) -> dict[str, Any]:
    """Write ``result.json`` into ``out``; the record of the retrain (mAP, schedule, data, checkpoint, warm start)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    return {"map50_95": result.map50_95, "map50": result.map50, "epochs": result.epochs, "data": settings.data,
            "imgsz": settings.imgsz, "seed": settings.seed, "path": result.weights, "result": str(out / "result.json"),
            "teacher": result.teacher, "init_from": result.init_from, "inherited": result.inherited}


def record_retrained(study: Any, trial_number: int, record: dict[str, Any]) -> None:
    """Store ``record`` on ``study`` as ``retrained:<n>`` (the latest: what export ships) and as
    ``retrained:<n>:teacher`` or ``retrained:<n>:plain`` (both kept: the model card compares them at equal epochs)."""
    study.set_user_attr(retrained_key(trial_number), record)
    study.set_user_attr(retrained_key(trial_number, "teacher" if record.get("teacher") else "plain"), record)
