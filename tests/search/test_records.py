"""Trial records (:mod:`search.study.records`): system attrs written while a trial runs, legacy user attrs still
read."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState, create_trial

from search.pareto import pareto_front, trial_metrics
from search.study.records import RECORD_PREFIX, read_record, record_attrs, records_of, write_record

LEGACY_DB = Path(__file__).resolve().parent / "data" / "legacy_study.db"
OBJ = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def _study(tmp_path: Path, name: str = "r") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'r.db'}",
                               directions=["maximize", "minimize"])


def test_a_record_is_a_system_attr_not_a_user_attr(tmp_path: Path) -> None:
    study = _study(tmp_path)
    trial = study.ask()
    write_record(trial, "architecture", {"stages": {"p3": {"block": "RepViT"}}})
    write_record(trial, "epoch_map", [0.1])
    write_record(trial, "epoch_map", [0.1, 0.2])  # replaced as the trial goes on
    trial.set_user_attr("latency", "1.0 ms (cpu, float32, 64 px, 1 thread)")  # a short line of the same name
    write_record(trial, "latency", {"median_ms": 1.0})
    study.tell(trial, [0.2, 1.0])
    (done,) = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 'r.db'}").trials
    assert done.system_attrs[RECORD_PREFIX + "architecture"] == {"stages": {"p3": {"block": "RepViT"}}}
    assert set(done.user_attrs) == {"latency"} and done.user_attrs["latency"].startswith("1.0 ms")
    assert read_record(done, "epoch_map") == [0.1, 0.2]
    assert read_record(done, "latency") == {"median_ms": 1.0}
    assert read_record(done, "stopped_at") is None and read_record(done, "rungs", []) == []
    assert records_of(done) == {"architecture": {"stages": {"p3": {"block": "RepViT"}}}, "epoch_map": [0.1, 0.2],
                                "latency": {"median_ms": 1.0}}


def test_a_scalar_is_refused_and_a_told_trial_takes_no_record(tmp_path: Path) -> None:
    study = _study(tmp_path)
    trial = study.ask()
    with pytest.raises(TypeError, match="record 'params' must be a JSON object or array, got int"):
        write_record(trial, "params", 2_500_000)
    with pytest.raises(TypeError, match="record 'hash' must be"):
        record_attrs({"hash": "abc"})
    study.tell(trial, [0.1, 1.0])
    with pytest.raises(UpdateFinishedTrialError):
        write_record(trial, "metrics", {"map50_95": 0.1})


def test_a_legacy_study_reads_through_the_same_functions(tmp_path: Path) -> None:
    shutil.copy(LEGACY_DB, tmp_path / "legacy.db")
    study = optuna.load_study(study_name="legacy", storage=f"sqlite:///{tmp_path / 'legacy.db'}")
    base = study.trials[0]
    assert not any(k.startswith(RECORD_PREFIX) for k in base.system_attrs)  # really the old format
    assert read_record(base, "architecture")["stages"]["p3_backbone"]["block"] == "C3k2"
    assert read_record(base, "latency")["median_ms"] == pytest.approx(6.9646905)
    assert read_record(base, "epoch_map") == [0.0]
    assert read_record(base, "hash") is None  # a short user attr is never a record
    assert trial_metrics(base)["params_m"] == pytest.approx(2.57228)
    assert {"architecture", "latency", "metrics", "epoch_map", "versions"} <= set(records_of(base))
    assert pareto_front(study, OBJ)  # the front is built from the legacy records


def test_records_written_since_win_over_legacy_user_attrs() -> None:
    t = create_trial(state=TrialState.COMPLETE, values=[0.1, 1.0], user_attrs={"metrics": {"map50_95": 0.0}},
                     system_attrs=record_attrs({"metrics": {"map50_95": 0.5}}))
    assert read_record(t, "metrics") == {"map50_95": 0.5} and records_of(t) == {"metrics": {"map50_95": 0.5}}
