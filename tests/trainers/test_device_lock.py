"""The per-device lock: shared holds (training epochs) coexist, an exclusive hold (latency) waits for them.

Holders are real child processes that take the lock and keep it until told on stdin (or
killed); the parent's attempts run in daemon threads with a deadline, so a broken lock
fails the test instead of hanging it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainers.train.device_lock import SharedDeviceLock, device_lock, lock_path

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from trainers.train.device_lock import device_lock
with device_lock(sys.argv[1], exclusive=sys.argv[2] == "exclusive", lock_dir=sys.argv[3]):
    print("acquired", repr(time.time()), flush=True)
    sys.stdin.readline()
    print("releasing", repr(time.time()), flush=True)
"""


class Holder:
    """A child process holding ``device``'s lock until :meth:`release` (or until killed)."""

    def __init__(self, lock_dir: Path, mode: str, device: str = "cpu"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, device, mode, str(lock_dir)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait_acquired(self, timeout: float = 30.0) -> float:
        """The time the child reported holding the lock (fails the test if it does not within ``timeout``)."""
        return self._read("acquired", timeout)

    def release(self, timeout: float = 30.0) -> float:
        """Tell the child to let go; the time just before it unlocked."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        released = self._read("releasing", timeout)
        assert self.proc.wait(timeout) == 0
        return released

    def _read(self, word: str, timeout: float) -> float:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        assert result and result[0].startswith(word), f"child did not report {word!r} within {timeout} s: {result}"
        return float(result[0].split()[1])

    def kill(self) -> None:
        """SIGKILL the child (no cleanup of its own) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[Callable[[str], Holder]]:
    """Start lock-holding children in ``tmp_path / 'locks'``; every one is killed at the end."""
    started: list[Holder] = []

    def start(mode: str) -> Holder:
        holder = Holder(tmp_path / "locks", mode)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.kill()


class Attempt:
    """Take the lock in a daemon thread, recording when it was held."""

    def __init__(self, lock_dir: Path, exclusive: bool, device: str = "cpu"):
        self.acquired_at: float | None = None
        self.done = threading.Event()
        self.release = threading.Event()

        def run() -> None:
            with device_lock(device, exclusive=exclusive, lock_dir=lock_dir):
                self.acquired_at = time.time()
                self.done.set()
                self.release.wait(30)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        """Let go of the lock and wait for the thread."""
        self.release.set()
        self.thread.join(10)


def test_exclusive_waits_for_a_shared_hold(tmp_path: Path, holders: Callable[[str], Holder]) -> None:
    training = holders("shared")
    training.wait_acquired()
    measuring = Attempt(tmp_path / "locks", exclusive=True)
    assert not measuring.done.wait(0.5), "exclusive lock taken while a shared hold exists"
    released = training.release()
    assert measuring.done.wait(10), "exclusive lock not taken after the shared hold was released"
    assert measuring.acquired_at is not None and measuring.acquired_at >= released
    measuring.finish()


def test_shared_waits_for_an_exclusive_hold(tmp_path: Path, holders: Callable[[str], Holder]) -> None:
    """A measurement in progress keeps a new epoch from starting (SharedDeviceLock as the trainer uses it)."""
    measuring = holders("exclusive")
    measuring.wait_acquired()
    epoch = SharedDeviceLock("cpu", lock_dir=tmp_path / "locks")
    started = threading.Event()

    def start_epoch() -> None:
        epoch.acquire()
        started.set()

    thread = threading.Thread(target=start_epoch, daemon=True)
    thread.start()
    assert not started.wait(0.5), "shared lock taken while an exclusive hold exists"
    released = measuring.release()
    assert started.wait(10)
    assert time.time() >= released
    epoch.release()


def test_two_shared_holds_coexist(tmp_path: Path, holders: Callable[[str], Holder]) -> None:
    first, second = holders("shared"), holders("shared")
    t_first = first.wait_acquired()
    t_second = second.wait_acquired()  # while the first still holds: it has not been told to release
    assert first.proc.poll() is None and second.proc.poll() is None
    assert t_second > 0 and t_first > 0
    # and a third, in this process, too
    third = Attempt(tmp_path / "locks", exclusive=False)
    assert third.done.wait(5)
    third.finish()
    first.release()
    second.release()


def test_lock_is_released_when_its_holder_is_killed(tmp_path: Path, holders: Callable[[str], Holder]) -> None:
    holder = holders("exclusive")
    holder.wait_acquired()
    waiting = Attempt(tmp_path / "locks", exclusive=True)
    assert not waiting.done.wait(0.3)
    t0 = time.time()
    holder.kill()  # SIGKILL: no finally, no unlock; the kernel drops the lock with the process
    assert waiting.done.wait(1.0), "lock not free within 1 s of its holder being killed"
    assert waiting.acquired_at is not None and waiting.acquired_at - t0 < 1.0
    waiting.finish()


def _free_exclusive(path: Path) -> bool:
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return True


def test_shared_device_lock_acquire_and_release_are_idempotent(tmp_path: Path) -> None:
    lock = SharedDeviceLock("cuda:0", lock_dir=tmp_path)
    assert lock.path == tmp_path / "cuda_0.lock"
    lock.release()  # not held: no-op
    lock.acquire()
    lock.acquire()  # held: no-op (a second open file would need a second release)
    assert not _free_exclusive(lock.path)
    lock.release()
    assert _free_exclusive(lock.path)
    lock.release()
    assert _free_exclusive(lock.path)


def test_lock_path_names_the_device_and_honours_the_environment(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert lock_path("cuda:1", tmp_path) == tmp_path / "cuda_1.lock"
    assert lock_path("../../etc/x", tmp_path).parent == tmp_path
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "env"))
    assert lock_path("cpu") == tmp_path / "env" / "cpu.lock"
    with device_lock("cpu", exclusive=True):
        assert (tmp_path / "env" / "cpu.lock").is_file()
        assert not _free_exclusive(tmp_path / "env" / "cpu.lock")
    assert _free_exclusive(tmp_path / "env" / "cpu.lock")
