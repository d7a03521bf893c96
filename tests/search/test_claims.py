"""An architecture is trained once: a later trial waits for an earlier live one training it (the claim), a dead
worker's claim is not waited for, and the rerun recovers what a killed worker left RUNNING.

The studies are real SQLite files behind the project's storage (heartbeats on); a dead worker is a finished
process's pid on this host, or a heartbeat moved into the past.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search.engine.per_trial as per_trial
from search.engine.per_trial import reusable_trial, training_claim
from search.study.storage import STALE_SECOND_LOOK_S, make_storage, recover_dead_trials, trial_id

X = optuna.distributions.IntDistribution(0, 9)


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setattr(per_trial, "CLAIM_POLL_S", 0.1)
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    return optuna.create_study(storage=storage, directions=["maximize", "minimize"], study_name="claims")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def start(study: optuna.Study, arch_hash: str | None, pid: int, host: str | None = None) -> optuna.Trial:
    """A RUNNING trial of ``arch_hash`` (``None``: not recorded yet) run by ``pid`` on ``host``, heartbeat sent."""
    trial = study.ask({"x": X})
    trial.set_user_attr("host", host or socket.gethostname())
    trial.set_user_attr("pid", pid)
    if arch_hash is not None:
        trial.set_user_attr("hash", arch_hash)
    study._storage.record_heartbeat(trial_id(study._storage, study, trial.number))
    return trial


def test_the_lowest_numbered_live_trial_trains_the_later_ones_wait(study: optuna.Study) -> None:
    first = start(study, "aaa", pid=1)  # pid 1 lives: a live worker
    second = start(study, "aaa", pid=1)
    other = start(study, "bbb", pid=1)
    assert training_claim(study, "aaa", first.number) is None  # nobody earlier: it trains
    assert training_claim(study, "aaa", second.number).number == first.number  # it waits for the first
    assert training_claim(study, "bbb", other.number) is None  # another architecture: not its claim
    unrecorded = start(study, None, pid=1)  # asked, architecture not written yet: it may be the same one
    assert training_claim(study, "ccc", unrecorded.number + 1).number == unrecorded.number


def test_a_waiting_trial_reuses_the_result_once_the_claim_is_told(study: optuna.Study,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    first = start(study, "aaa", pid=1)
    second = start(study, "aaa", pid=1)
    teller = threading.Timer(1.0, lambda: study.tell(first, [0.5, 10.0]))
    teller.start()
    t0 = time.monotonic()
    prev = reusable_trial(study, "aaa", second.number, prefix="[2/2] ")
    waited = time.monotonic() - t0
    teller.join()
    assert prev is not None and prev.number == first.number and prev.values == [0.5, 10.0]
    assert 0.9 <= waited < 5, waited
    assert f"[2/2] trial {first.number} is training the same architecture: waiting for its result" in \
        capsys.readouterr().err


def test_a_dead_workers_claim_is_not_waited_for(study: optuna.Study, tmp_path: Path) -> None:
    gone = start(study, "aaa", pid=dead_pid())  # its process on this host has ended
    stale = start(study, "aaa", pid=1, host="elsewhere")  # on another host: its heartbeat is a minute old
    with sqlite3.connect(tmp_path / "s.db") as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-60 seconds') WHERE trial_id = ?",
                    (trial_id(study._storage, study, stale.number),))
    later = start(study, "aaa", pid=1)
    t0 = time.monotonic()
    assert training_claim(study, "aaa", later.number) is None
    assert reusable_trial(study, "aaa", later.number) is None  # nothing finished to reuse: it trains itself
    assert time.monotonic() - t0 < 2
    assert {gone.number, stale.number} < {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}


def test_a_worker_killed_while_it_waits_or_trains_leaves_nothing_running_after_the_rerun(
        study: optuna.Study) -> None:
    owner = start(study, "aaa", pid=dead_pid())  # killed while training: the claim was never told
    waiter = start(study, "aaa", pid=dead_pid())  # killed while it waited for the owner's result
    done = start(study, "bbb", pid=1)
    study.tell(done, [0.4, 9.0])  # told: a finished trial holds no claim and is left alone
    killed_after_tell = start(study, "bbb", pid=dead_pid())  # killed after the first tell, before its own

    failed = recover_dead_trials(study, study._storage)  # what the rerun does first

    assert sorted(failed) == [owner.number, waiter.number, killed_after_tell.number]
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number in failed:
        assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["fail_kind"] == "worker_died"
    retries = {t.user_attrs["retry_of"]: t for t in trials if t.state == TrialState.WAITING}
    assert sorted(retries) == sorted(failed)  # each queued again
    retry = study.ask({"x": X})  # the owner's retry, with its parameters, now holds the claim of "aaa" ...
    assert retry.user_attrs["retry_of"] == owner.number and retry.params == owner.params
    retry.set_user_attr("hash", "aaa")
    assert training_claim(study, "aaa", retry.number) is None
    assert reusable_trial(study, "bbb", retry.number + 5).number == done.number  # ... and "bbb" is reused


@pytest.mark.parametrize("beats_again", [True, False])
def test_a_heartbeat_missed_in_an_outage_is_looked_at_twice_before_its_trial_is_failed(
        study: optuna.Study, tmp_path: Path, beats_again: bool) -> None:
    live = start(study, "aaa", pid=1, host="elsewhere")  # another machine's worker, training through the outage
    tid = trial_id(study._storage, study, live.number)
    with sqlite3.connect(tmp_path / "s.db") as con:  # its last heartbeat before a 60 s outage
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-60 seconds') WHERE trial_id = ?", (tid,))
    beat = threading.Timer(1.0, study._storage.record_heartbeat, (tid,))  # its heartbeat thread writes again
    if beats_again:
        beat.start()
    t0 = time.monotonic()
    recover_dead_trials(study, study._storage)  # a second search.run joining the study as the database returns
    assert STALE_SECOND_LOOK_S <= time.monotonic() - t0 < STALE_SECOND_LOOK_S + 3
    state = study.get_trials()[live.number].state
    assert state == (TrialState.RUNNING if beats_again else TrialState.FAIL)  # a dead worker's trial is still failed
    recover_dead_trials(study, study._storage)
    assert study.get_trials()[live.number].state == state
