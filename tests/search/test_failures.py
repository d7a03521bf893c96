"""One failure path (:mod:`search.study.failures`): attrs, state and re-queue, for a live or another worker's trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.study.failures import FailKind, fail_trial, record_failure
from search.study.storage import count_finished, is_finished
from trainers.train.results import FAILURE_KINDS, TrialFailure


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])


def test_a_failed_trial_says_why_and_only_a_dead_worker_is_queued_again(study: optuna.Study) -> None:
    trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    trial.set_user_attr("baseline", True)
    assert fail_trial(study, trial, FailKind.WORKER_DIED, "interrupted: KeyboardInterrupt", requeue={"retries": 1})
    done, queued = study.get_trials(deepcopy=False)
    assert done.state == TrialState.FAIL and done.user_attrs["fail_kind"] == "worker_died"
    assert done.user_attrs["fail_reason"] == "interrupted: KeyboardInterrupt" and not is_finished(done)
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == done.params
    assert queued.user_attrs == {"baseline": True, "retry_of": 0, "retries": 1}
    retry = study.ask()  # the queued copy runs next
    assert retry.number == 1 and retry.suggest_int("x", 0, 9) == done.params["x"]
    fail_trial(study, retry, FailKind.BUILD, "cannot build")  # final: counted, not queued
    assert len(study.trials) == 2 and count_finished(study) == 1


def test_another_workers_trial_is_failed_through_the_storage_once(study: optuna.Study) -> None:
    study.ask()
    stale = study.get_trials(deepcopy=False)[0]
    storage = study._storage  # what recover_dead_trials is handed
    assert fail_trial(study, stale, FailKind.WORKER_DIED, "worker died", requeue={}, storage=storage)
    assert study.trials[0].user_attrs == {"fail_kind": "worker_died", "fail_reason": "worker died"}
    assert not fail_trial(study, stale, FailKind.WORKER_DIED, "again", requeue={}, storage=storage)  # told already
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # queued once


def test_fail_kinds_are_one_list_and_read_back_typed() -> None:
    assert FAILURE_KINDS == ("build", "oom", "nan", "error", "timeout", "worker_died")
    failure = TrialFailure.from_dict(TrialFailure(FailKind.OOM, "CUDA out of memory").to_dict())
    assert failure.kind is FailKind.OOM and failure.counts_as_finished
    assert not TrialFailure.from_dict({"kind": "worker_died", "reason": "x"}).counts_as_finished
    with pytest.raises(ValueError, match="'melted' is not a valid FailKind"):
        TrialFailure.from_dict({"kind": "melted", "reason": "x"})


def test_record_failure_writes_the_value_not_the_enum(study: optuna.Study) -> None:
    trial = study.ask()
    record_failure(trial, FailKind.TIMEOUT, "outlived")
    study.tell(trial, state=TrialState.FAIL)
    assert study.trials[0].user_attrs["fail_kind"] == "timeout" and type(study.trials[0].user_attrs["fail_kind"]) is str
