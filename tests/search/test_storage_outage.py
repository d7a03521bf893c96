"""The study's PostgreSQL server stopped while trials run: a short outage loses nothing, a long one stops
``search.run`` with one line, and the same command then resumes.

Each test has its own throwaway server (``pg_server.py``), stopped with ``pg_ctl stop -m immediate`` (every
connection dropped at once, as in a crash) while the first trial trains, then started again on the same
port and data.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from fault_helpers import load_study, start_search, tail, wait_for_log
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from search.study.outage import EXIT_STORAGE_UNAVAILABLE, OutageTolerantStorage, StorageUnavailable, outage_limit_s
from search.study.storage import GRACE_PERIOD_S, is_finished

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT, OREPA], kernels: [[3], [3, 5]]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 4, imgsz: 64, batch: 4}
"""
TRAINING = r"\] epoch 1/4"  # the first trial has trained one of its four epochs (a quiet CPU trains one in ~1 s:
TRAINED = r"\] epoch 4/4"  # four leave the server time to go down while it trains)


def dropped() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


class CommitThenDrop(RDBStorage):
    """A storage whose first ``set_trial_state_values`` commits, then loses the connection before answering."""

    dropped_once = False

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: object = None) -> bool:
        done = super().set_trial_state_values(trial_id, state, values)
        if state.is_finished() and not self.dropped_once:
            self.dropped_once = True
            raise dropped()
        return done


class Unreachable(RDBStorage):
    """A storage whose database has gone away: every read fails as a lost connection."""

    def get_all_trials(self, *args: object, **kwargs: object) -> list:
        raise dropped()


def test_a_tell_retried_after_its_commit_went_through_succeeds(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    storage = OutageTolerantStorage(lambda: CommitThenDrop(f"sqlite:///{tmp_path / 's.db'}"), "sqlite:///s.db", 5)
    study = optuna.create_study(storage=storage, directions=["maximize"])
    trial = study.ask()
    study.tell(trial, 0.5)  # the retry finds the trial COMPLETE already: its own commit, not someone else's
    assert storage.backend.dropped_once
    assert [(t.state, t.values) for t in study.trials] == [(TrialState.COMPLETE, [0.5])]
    err = capsys.readouterr().err
    assert "unreachable (OperationalError" in err and "reachable again" in err


def test_past_the_limit_the_storage_gives_up_once_and_then_at_once(tmp_path: Path) -> None:
    url = "postgresql://search:s3cret@db.example/studies"
    storage = OutageTolerantStorage(lambda: Unreachable(f"sqlite:///{tmp_path / 's.db'}"), url, limit_s=0.6)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "down")
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"storage postgresql://search:\*\*\*@db.example/studies "
                                                 r"unreachable for \d+ s \(OperationalError: .*run the same command"):
        storage.get_all_trials(study_id)
    assert 0.6 <= time.monotonic() - t0 < 3
    t1 = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.get_study_directions(study_id)  # a call that would work: the storage is given up, it stops at once
    assert time.monotonic() - t1 < 0.1


@pytest.mark.parametrize("text", ["0", "-3", "soon", "inf"])
def test_the_outage_limit_from_the_environment_is_checked(text: str) -> None:
    assert outage_limit_s({}) == 60 and outage_limit_s({"REPNAS_STORAGE_OUTAGE_S": "4.5"}) == 4.5
    with pytest.raises(ValueError, match=f"REPNAS_STORAGE_OUTAGE_S must be a positive number of seconds, got '{text}'"):
        outage_limit_s({"REPNAS_STORAGE_OUTAGE_S": text})


@pytest.fixture
def server() -> Iterator[object]:
    """A PostgreSQL server of this test alone (the test stops and starts it)."""
    from pg_server import PostgresServer, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="repnas-pg-outage-"))
    pg = PostgresServer(root).start()
    yield pg
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_postgres_restarted_within_the_grace_period_loses_nothing(tmp_path: Path, data: Path, server: object,
                                                                  backend: str) -> None:
    if backend == "ray":
        pytest.importorskip("ray")
    args = ("--data", str(data), "--trials", "2", "--storage", server.url, "--study", "restart", "--seed", "1",
            "--backend", backend)
    proc, log = start_search(tmp_path, SPACE, *args)
    try:
        wait_for_log(log, TRAINING, proc, timeout=300)
        down = time.time()
        server.stop()
        wait_for_log(log, TRAINED, proc, timeout=60)  # training over: its result is waiting for the database
        wait_for_log(log, "unreachable", proc, timeout=GRACE_PERIOD_S - 3)  # the search has met the outage
        server.start()
        back = time.time()
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert rc == 0, tail(log)
    assert back - down < GRACE_PERIOD_S
    assert "unreachable" in text and "reachable again" in text, tail(log)  # the search met the outage and waited
    study = load_study(server.url, "restart")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], [t.state for t in trials]
    first = trials[0]  # finished training during the outage: its result was written once the database was back
    assert first.user_attrs["baseline"] is True and len(first.values) == 2
    assert first.datetime_complete.timestamp() > back - 1
    assert first.user_attrs["weights"].endswith("best.pt") and first.user_attrs["train_seconds"] > 0
    assert not any("retry_of" in t.user_attrs for t in trials)  # nothing had to be run again
    assert "Traceback" not in text, tail(log)


@pytest.mark.slow
def test_postgres_down_past_the_limit_exits_with_one_line_and_the_rerun_resumes(tmp_path: Path, data: Path,
                                                                               server: object) -> None:
    args = ("--data", str(data), "--trials", "1", "--storage", server.url, "--study", "outage", "--seed", "1")
    env = {"REPNAS_STORAGE_OUTAGE_S": "4"}
    proc, log = start_search(tmp_path, SPACE, *args, env=env)
    try:
        wait_for_log(log, TRAINING, proc, timeout=300)
        server.stop()
        rc = proc.wait(timeout=120)  # the trial ends its training, its writes wait 4 s, then the run stops
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = log.read_text().splitlines()
    assert rc == EXIT_STORAGE_UNAVAILABLE, tail(log)
    assert "Traceback" not in log.read_text(), tail(log)
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], tail(log)  # one line, the last
    assert re.search(rf"error: storage {re.escape(server.url)} unreachable for \d+ s \(OperationalError", lines[-1])
    assert "run the same command again to resume" in lines[-1]

    server.start()
    again, log2 = start_search(tmp_path, SPACE, *args, env=env, log_name="rerun.log")
    try:
        assert again.wait(timeout=400) == 0, tail(log2)
    finally:
        if again.poll() is None:
            again.kill()
    assert "lost their worker" in log2.read_text()
    study = load_study(server.url, "outage")
    trials = study.trials
    cut = trials[0]  # the baseline, training when the database went away
    assert cut.state == TrialState.FAIL and not is_finished(cut), [(t.number, t.state.name) for t in trials]
    redo = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(redo) == 1 and redo[0].state == TrialState.COMPLETE and redo[0].params == cut.params
    assert redo[0].user_attrs.get("baseline") is True  # the stock model re-run is still the study's baseline
    assert sum(is_finished(t) for t in trials) == 1
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
