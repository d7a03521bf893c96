"""A per-device file lock, so no latency figure is taken while a trial of the same run trains there.

Training holds the lock *shared* for each epoch; a latency measurement holds it *exclusive*.
Several trainings can share a device, but a measurement waits until none is mid-epoch and
blocks new epochs until it is done. POSIX ``fcntl.flock``: released by the kernel if the
holder dies, so a crashed worker never leaves a device locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LOCK_DIR = Path("studies") / ".locks"


def lock_path(device: str, lock_dir: str | Path | None = None) -> Path:
    """The lock file of ``device`` (e.g. ``cpu``, ``cuda:0``) under ``lock_dir``."""
    root = Path(lock_dir or os.environ.get("REPNAS_LOCK_DIR") or DEFAULT_LOCK_DIR)
    return root / (re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


@contextlib.contextmanager
def device_lock(device: str, exclusive: bool, lock_dir: str | Path | None = None) -> Iterator[None]:
    """Hold ``device``'s lock, shared (training) or exclusive (measuring), for the ``with`` body."""
    path = lock_path(device, lock_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class SharedDeviceLock:
    """A shared hold on a device lock that can be taken and released across callbacks (per epoch)."""

    def __init__(self, device: str, lock_dir: str | Path | None = None):
        self.path = lock_path(device, lock_dir)
        self._file: object | None = None

    def acquire(self) -> None:
        """Take the shared lock (no-op if already held)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held across calls
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            self._file = f

    def release(self) -> None:
        """Release the shared lock (no-op if not held)."""
        if self._file is not None:
            f = self._file
            self._file = None
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)  # type: ignore[attr-defined]
            f.close()  # type: ignore[attr-defined]
