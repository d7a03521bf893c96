"""Run one trial in its own process, so a crash, an OOM kill or a hang cannot take the study down.

The child is ``python -m trainers.trial --job <out>/trial.json``: the whole trial contract
(architecture, settings, figures measured before training) is that one file, written by
:meth:`trainers.results.TrialJob.write`, never copied into flags. Its stdout is one JSON line
(the result), its stderr (progress) is passed through with a prefix and kept in ``trial.log``. The
child dies with its parent (``PR_SET_PDEATHSIG`` on Linux), and past the timeout its whole
process group is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from trainers.results import TrialFailure, TrialJob, TrialResult


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def trial_command(job_file: Path) -> list[str]:
    """The ``python -m trainers.trial`` command line of a trial job file."""
    return [sys.executable, "-m", "trainers.trial", "--job", str(job_file)]


def _pump(stream: IO[str], prefix: str, log_file: IO[str], tail: list[str]) -> None:
    for line in stream:
        log_file.write(line)
        log_file.flush()
        tail.append(line.rstrip())
        del tail[:-20]
        sys.stderr.write(prefix + line)
        sys.stderr.flush()


def run_trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None) -> TrialResult | TrialFailure:
    """Run ``job`` in a child process, in its folder ``job.settings.out``; failures come back as TrialFailure."""
    out = Path(job.settings.out)
    job_file = job.write(out)
    arch_hash = job.architecture.hash
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "YOLO_OFFLINE": "1"}
    tail: list[str] = []
    with open(out / "trial.log", "a") as log_file:
        proc = subprocess.Popen(trial_command(job_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, preexec_fn=_die_with_parent)
        pump = threading.Thread(target=_pump, args=(proc.stderr, prefix, log_file, tail), daemon=True)
        stdout: list[str] = []
        reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
        pump.start()
        reader.start()  # stdout and stderr each have one reader: communicate() would steal stderr lines
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return TrialFailure("timeout", f"trial outlived --trial-timeout {timeout:g} s and was killed", arch_hash)
        finally:
            reader.join(timeout=5)
            pump.join(timeout=5)
    return parse_trial_output("".join(stdout), proc.returncode, tail, arch_hash)


def parse_trial_output(stdout: str, returncode: int, tail: list[str], arch_hash: str) -> TrialResult | TrialFailure:
    """The result line of a trial process, or a failure saying how it ended."""
    lines = [ln for ln in stdout.splitlines() if ln.strip().startswith("{")]
    if lines:
        data = json.loads(lines[-1])
        return TrialResult.from_dict(data) if data.get("ok") else TrialFailure.from_dict(data)
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    last = " | ".join(tail[-3:])
    kind = "oom" if returncode == -signal.SIGKILL and "memory" in last.lower() else "error"
    return TrialFailure(kind, f"trial process {how} without a result; last output: {last}"[:500], arch_hash)
