"""Run one trial in its own process, so a crash, an OOM kill or a hang cannot take the study down.

The child is ``python -m trainers.train.trial --job <out>/trial.json``: the whole trial contract
(architecture, settings, figures measured before training) is that one file, written by
:meth:`trainers.train.results.TrialJob.write`, never copied into flags. Its stdout is one JSON line
(the result), its stderr (progress) is passed through with a prefix and kept in ``trial.log``. The
child dies with its parent (``PR_SET_PDEATHSIG`` on Linux), and past the timeout its whole
process group is killed.

Per-epoch progress (:class:`~trainers.train.results.EpochProgress` lines on the child's stderr, kept
in ``trial.log`` but not echoed) goes to the caller's ``on_epoch`` callback as each epoch ends;
when it answers ``True``, the child's process group is killed and the run comes back as
:class:`TrialStopped` (the successive-halving stop of :mod:`search.engine.rungs`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, overload

from trainers.cli import log
from trainers.train.results import EpochProgress, FailKind, TrialFailure, TrialJob, TrialResult

OnEpoch = Callable[[EpochProgress], bool]


@dataclass(frozen=True)
class TrialStopped:
    """A trial process killed on request of its ``on_epoch`` callback, after ``epoch`` epochs."""

    epoch: int
    arch_hash: str


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def trial_command(job_file: Path) -> list[str]:
    """The ``python -m trainers.train.trial`` command line of a trial job file."""
    return [sys.executable, "-m", "trainers.train.trial", "--job", str(job_file)]


class _Pump:
    """Reads the child's stderr: keeps it in ``trial.log``, echoes it with a prefix, hands epochs to ``on_epoch``."""

    def __init__(self, proc: subprocess.Popen[str], prefix: str, log_file: IO[str], on_epoch: OnEpoch | None):
        self.proc, self.prefix, self.log_file, self.on_epoch = proc, prefix, log_file, on_epoch
        self.tail: list[str] = []
        self.stopped_at: int | None = None

    def run(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_file.write(line)
            self.log_file.flush()
            progress = EpochProgress.from_line(line)
            if progress is not None:
                self._epoch(progress)
                continue
            self.tail.append(line.rstrip())
            del self.tail[:-20]
            sys.stderr.write(self.prefix + line)
            sys.stderr.flush()

    def _epoch(self, progress: EpochProgress) -> None:
        if self.on_epoch is None or self.stopped_at is not None:
            return
        try:
            stop = self.on_epoch(progress)
        except Exception as e:  # a storage hiccup must not stop reading (the child would block on a full pipe)
            log(f"{self.prefix}epoch {progress.epoch}: the rung check failed ({type(e).__name__}: {e}); going on")
            return
        if stop:
            self.stopped_at = progress.epoch
            _kill_group(self.proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


@overload
def run_trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None,
                      on_epoch: None = None) -> TrialResult | TrialFailure: ...


@overload
def run_trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None, *,
                      on_epoch: OnEpoch) -> TrialResult | TrialFailure | TrialStopped: ...


def run_trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None,
                      on_epoch: OnEpoch | None = None) -> TrialResult | TrialFailure | TrialStopped:
    """Run ``job`` in a child process, in its folder ``job.settings.out``; failures come back as TrialFailure.

    ``on_epoch``: called with each epoch's progress (in a reader thread); ``True`` stops the trial.
    """
    out = Path(job.settings.out)
    job_file = job.write(out)
    arch_hash = job.architecture.hash
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "YOLO_OFFLINE": "1"}
    with open(out / "trial.log", "a") as log_file:
        proc = subprocess.Popen(trial_command(job_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, preexec_fn=_die_with_parent)
        pump = _Pump(proc, prefix, log_file, on_epoch)
        pumping = threading.Thread(target=pump.run, daemon=True)
        stdout: list[str] = []
        reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
        pumping.start()
        reader.start()  # stdout and stderr each have one reader: communicate() would steal stderr lines
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            reason = f"trial outlived --trial-timeout {timeout:g} s and was killed"
            return TrialFailure(FailKind.TIMEOUT, reason, arch_hash)
        finally:
            reader.join(timeout=5)
            pumping.join(timeout=5)
    if pump.stopped_at is not None:
        return TrialStopped(pump.stopped_at, arch_hash)
    return parse_trial_output("".join(stdout), proc.returncode, pump.tail, arch_hash)


def parse_trial_output(stdout: str, returncode: int, tail: list[str], arch_hash: str) -> TrialResult | TrialFailure:
    """The result line of a trial process, or a failure saying how it ended."""
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if lines:
        data = json.loads(lines[-1])
        return TrialResult.from_dict(data) if data.get("ok") else TrialFailure.from_dict(data)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    last = " | ".join(tail[-3:])
    kind = FailKind.OOM if returncode == -signal.SIGKILL and "memory" in last.lower() else FailKind.ERROR
    return TrialFailure(kind, f"trial process {how} without a result; last output: {last}"[:500], arch_hash)
