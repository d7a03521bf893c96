"""The Optuna study of a search: storage, sampler, metric names, attrs, heartbeats, finished counts.

One study per search, two (or more) directions from the space's objectives, ``metric_names``
set so optuna-dashboard labels them. Trials record why they ended in user attrs
(``fail_kind``, ``fail_reason``, ``prune_reason``), so a trial that failed because its worker
died (no ``fail_kind``) is not counted as finished and is run again.

The storage waits through a database outage (:mod:`search.study.outage`): a write that fails
while the database is down is retried until it lands, or, past the outage limit, the search stops
with one line and the same command resumes it.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the heartbeat interface (not re-exported)
from optuna.trial import FrozenTrial, TrialState

from search.study.failures import FailKind, fail_trial
from search.study.outage import OutageTolerantStorage, is_connection_error, outage_limit_s

HEARTBEAT_INTERVAL_S = 2
GRACE_PERIOD_S = 10
STALE_SECOND_LOOK_S = 2 * HEARTBEAT_INTERVAL_S + 1  # a live worker's heartbeat lands within this after an outage
NOT_FINISHED_FAILS = (FailKind.WORKER_DIED.value,)


def default_storage_url(study_name: str, root: Path = Path("studies")) -> str:
    """``sqlite:///<abs>/studies/<study>.db`` (absolute, so Ray workers find it)."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / f'{study_name}.db').resolve()}"


def absolute_sqlite_url(url: str) -> str:
    """Make a relative ``sqlite:///path`` absolute (Ray Tune changes the working directory)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = Path(url[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def make_storage(url: str, outage_limit: float | None = None) -> OutageTolerantStorage:
    """An RDB storage with heartbeats; stale trials are failed and re-enqueued (up to 3 times).

    Calls wait through a database outage of up to ``outage_limit`` seconds (default
    :func:`~search.study.outage.outage_limit_s`), then raise
    :class:`~search.study.outage.StorageUnavailable` (:mod:`search.study.outage`).
    """
    limit = outage_limit_s() if outage_limit is None else outage_limit
    return OutageTolerantStorage(lambda: _rdb_storage_racing(url), url, limit)


def _rdb_storage_racing(url: str) -> RDBStorage:
    """``_rdb_storage``, retried when workers race to create the schema (an unreachable database is not retried
    here: the outage-tolerant storage waits for it)."""
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _rdb_storage(url)
        except sqlalchemy.exc.SQLAlchemyError as e:  # workers racing to create the schema: the loser retries
            if attempt == 4 or is_connection_error(e):
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _rdb_storage(url: str) -> RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        engine_kwargs["pool_pre_ping"] = True  # a connection the database dropped (restart) is replaced, not used
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails, it does not hang
    return RDBStorage(
        absolute_sqlite_url(url),
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=GRACE_PERIOD_S,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def make_sampler(name: str, seed: int | None, n_trials: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (multi-objective, constant liar for parallel workers), ``nsga2`` (population sized
    from the budget: its default of 50 would be random search at our sizes) or ``random``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=max(3, min(10, n_trials // 3)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 3)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler must be one of ['tpe', 'nsga2', 'random'], got {name!r}")


def open_study(name: str, storage: BaseStorage, objectives: tuple[tuple[str, str], ...],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create or resume (``load_if_exists``) the study; refuse one whose directions differ."""
    directions: list[Any] = [d for _, d in objectives]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler,
                                load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise ValueError(f"study {name!r} exists with directions {have}, the space asks for {directions}")
    study.set_metric_names([m for m, _ in objectives])
    return study


def is_finished(t: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a reason of the architecture itself (not a dead worker)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and t.user_attrs.get("fail_kind", "worker_died") not in NOT_FINISHED_FAILS


def count_finished(study: optuna.Study) -> int:
    """Number of finished trials (see :func:`is_finished`)."""
    return sum(is_finished(t) for t in study.get_trials(deepcopy=False))


def count_running(study: optuna.Study, waiting: bool = True) -> int:
    """Trials running right now (and enqueued ones, when ``waiting``)."""
    states = (TrialState.RUNNING, TrialState.WAITING) if waiting else (TrialState.RUNNING,)
    return len(study.get_trials(deepcopy=False, states=states))


def worker_identity() -> dict[str, Any]:
    """Host and process of this worker, recorded on each trial it runs."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage id of trial ``number`` (what heartbeats and storage writes take)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def stale_trial_numbers(study: optuna.Study) -> set[int]:
    """Numbers of the RUNNING trials whose heartbeat is older than the grace period (empty without heartbeats)."""
    storage = study._storage  # the study's own storage, as optuna.storages.fail_stale_trials reads it
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return set()
    return {storage.get_trial_number_from_id(tid) for tid in storage._get_stale_trial_ids(study._study_id)}


def worker_alive(t: FrozenTrial, stale: set[int]) -> bool:
    """Whether the worker of RUNNING trial ``t`` is alive: its heartbeat is fresh (``t.number`` not in ``stale``,
    from :func:`stale_trial_numbers`) and, when it runs on this host, its process exists."""
    host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
    if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
        return False
    return t.number not in stale


def recover_dead_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Fail at once RUNNING trials whose worker on this host is gone, and re-enqueue their params.

    Other hosts' stale trials are failed by Optuna's heartbeat grace period
    (``fail_stale_trials``, after this host's own: those get a reason), whose callback re-enqueues them
    too. Returns the numbers failed here.
    """
    me = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        if host == me and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
            if fail_trial(study, t, FailKind.WORKER_DIED, f"worker died (pid {pid} on {host} gone)", requeue={},
                          storage=storage):
                failed.append(t.number)
    fail_stale_trials(study)
    return failed


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials`` after a second look: when a heartbeat is stale, wait
    :data:`STALE_SECOND_LOOK_S` and fail only the trials still stale then.

    After a database outage longer than the grace period every live worker's heartbeat is stale until its
    heartbeat thread, which waited through the outage, writes again (within two intervals); a trial whose
    worker is alive must not be failed and trained a second time by whoever looks first.
    """
    if stale_trial_numbers(study):
        time.sleep(STALE_SECOND_LOOK_S)
    optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def periodically(fn: Callable[[], Any], name: str, interval_s: float = HEARTBEAT_INTERVAL_S) -> Iterator[None]:
    """Call ``fn`` every ``interval_s`` from a daemon thread while the body runs (a failed call is skipped)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            with contextlib.suppress(Exception):  # an outage or a closed connection: the next beat tries again
                fn()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def heartbeat(storage: OutageTolerantStorage, trial_id: int) -> Iterator[None]:
    """Send Optuna heartbeats for ``trial_id`` from a thread while the body runs (ask/tell drivers)."""
    storage.record_heartbeat(trial_id)
    with periodically(lambda: storage.record_heartbeat(trial_id), f"heartbeat-{trial_id}"):
        yield
