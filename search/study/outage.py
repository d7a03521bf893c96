"""A study storage that rides out a database outage, and the one-line exit when it lasts too long.

:class:`OutageTolerantStorage` is an Optuna storage (``BaseStorage`` + ``BaseHeartbeat``, Optuna's
public extension points) around an ``RDBStorage``. A call that fails because the database cannot be
reached (SQLAlchemy ``OperationalError``/``InterfaceError`` or an invalidated connection, also when
Optuna wraps it in ``StorageInternalError``) is retried with back-off; the search simply waits, and
every write (a ``tell``, a user attr, a heartbeat) lands once the database is back. A call still failing
``limit_s`` seconds after its first failure raises :class:`StorageUnavailable`; from then on every call
of that storage raises at once, so the process stops quickly and :func:`exit_on_storage_outage` turns
it into one line on stderr and exit code :data:`EXIT_STORAGE_UNAVAILABLE`. Rerunning the same command
resumes: the trials that were running are failed as "worker died" and queued again.

A write whose commit reached the server just before the connection dropped is retried too; for the
state of a trial (``tell``), the retry recognises its own earlier commit and succeeds.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import sqlalchemy.exc
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat  # RDBStorage's heartbeat interface (not re-exported)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from trainers.cli import fail, log

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy

STORAGE_OUTAGE_LIMIT_S = 60.0
OUTAGE_LIMIT_ENV = "REPNAS_STORAGE_OUTAGE_S"
EXIT_STORAGE_UNAVAILABLE = 3
T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """The study's database could not be reached for longer than the outage limit."""


def outage_limit_s(environ: dict[str, str] | None = None) -> float:
    """The outage limit in seconds: ``$REPNAS_STORAGE_OUTAGE_S`` when set, else :data:`STORAGE_OUTAGE_LIMIT_S`."""
    text = (os.environ if environ is None else environ).get(OUTAGE_LIMIT_ENV, "")
    if not text:
        return STORAGE_OUTAGE_LIMIT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{OUTAGE_LIMIT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the database could not be reached."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_storage(url: str) -> str:
    """The storage URL with its password hidden (for messages)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:200]


class OutageTolerantStorage(BaseStorage, BaseHeartbeat):
    """An ``RDBStorage`` whose calls wait through a database outage of up to ``limit_s`` seconds.

    Args:
        connect: builds the wrapped storage (called, and retried like any call, here).
        url: the storage URL, named in messages (password hidden).
        limit_s: how long one call may keep failing before :class:`StorageUnavailable`.
    """

    def __init__(self, connect: Callable[[], RDBStorage], url: str, limit_s: float) -> None:
        self.name, self.limit_s = describe_storage(url), limit_s
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._down: str | None = None
        self.backend: RDBStorage = self._retry(connect)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # the wrapped RDBStorage pickles without its engine (Ray pickles what it ships)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _retry(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        first: float | None = None
        delay = 0.25
        while True:
            if self._down is not None:
                raise StorageUnavailable(self._down)
            try:
                result = call(*args, **kwargs)
            except Exception as e:
                if not is_connection_error(e):
                    raise
                now = time.monotonic()
                first = now if first is None else first
                self._failing(e)
                if now - first >= self.limit_s:
                    self._give_up(now - first, e)
                    raise StorageUnavailable(self._down) from e
                time.sleep(min(delay, max(0.05, first + self.limit_s - now)))
                delay = min(2 * delay, 2.0)
                continue
            if first is not None or self._failing_since is not None:
                self._reachable()
            return result

    def _failing(self, exc: BaseException) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log(f"storage {self.name}: unreachable ({_first_line(exc)}); waiting up to {self.limit_s:g} s "
                    "for it to come back")

    def _reachable(self) -> None:
        with self._lock:
            if self._failing_since is not None:
                log(f"storage {self.name}: reachable again after {time.monotonic() - self._failing_since:.1f} s; "
                    "going on")
                self._failing_since = None

    def _give_up(self, seconds: float, exc: BaseException) -> None:
        with self._lock:
            self._down = self._down or (
                f"storage {self.name} unreachable for {seconds:.0f} s ({_first_line(exc)}): finished trials are "
                "in the study; bring the database back and run the same command again to resume")

    # Studies

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_all_studies)

    # Trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.create_new_trial, study_id, template_trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: Any) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_trial_param, trial_id, param_name)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """See ``BaseStorage``; retried through an outage. A retry that finds the trial already in ``state``
        (the earlier attempt committed before its connection dropped) succeeds."""
        attempts = 0

        def write() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return self.backend.set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts > 1 and state.is_finished() and self.backend.get_trial(trial_id).state == state:
                    return True
                raise

        return self._retry(write)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``; retried through an outage."""
        self._retry(self.backend.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_all_trials, study_id, deepcopy, states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_n_trials, study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """See ``BaseStorage``; retried through an outage."""
        return self._retry(self.backend.get_best_trial, study_id)

    def remove_session(self) -> None:
        """See ``BaseStorage``."""
        self.backend.remove_session()

    # Heartbeats

    def record_heartbeat(self, trial_id: int) -> None:
        """See ``BaseHeartbeat``; retried through an outage."""
        self._retry(self.backend.record_heartbeat, trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._retry(self.backend._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:
        """See ``BaseHeartbeat``."""
        return self.backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Any, FrozenTrial], None] | None:
        """See ``BaseHeartbeat``."""
        return self.backend.get_heartbeat_stale_trial_callback()


def exit_on_storage_outage(run: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's body: :class:`StorageUnavailable` becomes one line on stderr and exit code 3."""

    @functools.wraps(run)
    def guarded(*args: Any, **kwargs: Any) -> int:
        try:
            return run(*args, **kwargs)
        except StorageUnavailable as e:
            stop(e)

    return guarded


def stop(outage: StorageUnavailable) -> NoReturn:
    """Exit with one line naming the storage and what to do."""
    fail(str(outage), code=EXIT_STORAGE_UNAVAILABLE)


def keep_outage(target: Callable[..., None], outages: list[StorageUnavailable]) -> Callable[..., None]:
    """``target`` for a worker thread: a :class:`StorageUnavailable` is appended to ``outages`` (for the
    main thread to raise after ``join``) instead of ending the thread with a traceback."""

    @functools.wraps(target)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            target(*args, **kwargs)
        except StorageUnavailable as e:
            outages.append(e)

    return run
