"""Many workers on PostgreSQL, kill -9 in the middle of training, trial timeouts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_helpers import FIXED_SPACE, TINY_SPACE, load, run_search, trial_dirs

from search.study.records import read_record
from search.study.storage import is_finished

pytestmark = pytest.mark.slow


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_two_processes_share_one_postgres_study(tmp_path: Path, data: Path, postgres_url: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--data", str(data), "--trials", "4",
           "--storage", postgres_url, "--study", "shared", "--studies-dir", str(tmp_path / "studies")]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = [t for t in study.trials if is_finished(t)]
    assert 4 <= len(finished) <= 4 + 1  # never overshot by more than the number of workers
    assert "RUNNING" not in states(study)
    assert len({t.number for t in study.trials}) == len(study.trials)
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert len(t.values) == 2 and read_record(t, "architecture") is not None


def test_two_workers_train_one_architecture_once(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, FIXED_SPACE, "--data", str(data), "--trials", "2", "--workers", "2", "--study", "twice")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "twice")
    t0, t1 = study.trials
    assert [t0.state, t1.state] == [TrialState.COMPLETE, TrialState.COMPLETE], states(study)
    assert t0.user_attrs["hash"] == t1.user_attrs["hash"]  # one architecture, asked twice at once
    assert "reused_from" not in t0.user_attrs and t1.user_attrs["reused_from"] == 0 and t1.values == t0.values
    assert len(trial_dirs(tmp_path, "twice")) == 1  # trained once
    assert "trial 0 is training the same architecture: waiting for its result" in r.stderr


def test_kill_9_mid_training_loses_nothing_and_the_rerun_finishes(tmp_path: Path, data: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--data", str(data), "--trials", "3",
           "--epochs", "4", "--study", "crash", "--studies-dir", str(tmp_path / "studies"), "--seed", "2"]
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    assert proc.stderr is not None
    running = -1
    for line in proc.stderr:  # wait until a trial after the baseline has trained one epoch, then kill the worker
        if m := re.search(r"start trial (\d+)", line):
            running = int(m.group(1))
        if (running >= 1 and re.search(r"\] epoch 1/4", line)) or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    before = load(tmp_path, "crash")
    assert running >= 1 and states(before)[running] == "RUNNING", (running, states(before))
    assert all(is_finished(t) for t in before.trials[:running])
    baseline_dir = trial_dirs(tmp_path, "crash")[0]
    baseline_weights = (baseline_dir / "weights" / "best.pt").stat().st_mtime

    again = run_search(tmp_path, TINY_SPACE, "--data", str(data), "--trials", "3", "--epochs", "4", "--study",
                       "crash", "--seed", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "lost their worker" in again.stderr
    after = load(tmp_path, "crash")
    dead = after.trials[running]
    assert dead.state == TrialState.FAIL and "worker died" in dead.user_attrs["fail_reason"]
    assert not is_finished(dead)
    assert "RUNNING" not in states(after)
    assert sum(is_finished(t) for t in after.trials) == 3
    retry = [t for t in after.trials if t.user_attrs.get("retry_of") == running]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    assert (baseline_dir / "weights" / "best.pt").stat().st_mtime == baseline_weights  # not redone


def test_trial_timeout_is_a_fail_with_reason_and_the_study_goes_on(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, TINY_SPACE, "--data", str(data), "--trials", "2", "--study", "slow",
                   "--trial-timeout", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "slow")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    for t in failed:
        assert t.user_attrs["fail_kind"] == "timeout" and "--trial-timeout" in t.user_attrs["fail_reason"]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "studies" / "slow")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""  # the killed trial processes are gone
