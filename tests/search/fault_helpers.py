"""Real faults for the fault tests and ``bench/workers.py``: a multi-node Ray cluster on one machine, a
``search.run`` process watched through its log, and the trial that is training on a given node.

The cluster is Ray's own multi-node test harness (:class:`ray.cluster_utils.Cluster`): every node is a
separate raylet (its own processes, its own CPUs), all joined to one head; removing a node kills all of
its processes at once (``allow_graceful=False``), as a machine that dies would.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

T = TypeVar("T")


class LocalRayCluster:
    """``nodes`` Ray nodes on this machine (the head and ``nodes - 1`` workers), ``cpus`` CPUs each.

    Use as a context manager; :attr:`address` is what ``--ray-address`` takes, :attr:`node_ids` the ids of
    every node started, the head's first.
    """

    def __init__(self, nodes: int, cpus: int = 1) -> None:
        from ray.cluster_utils import Cluster

        self.cpus = cpus
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
        self.workers: dict[str, Any] = {}
        for _ in range(nodes - 1):
            node = self.cluster.add_node(num_cpus=cpus)
            self.workers[node.node_id] = node
        self.cluster.wait_for_nodes()
        self.address: str = self.cluster.address
        self.node_ids: list[str] = [self.cluster.head_node.node_id, *self.workers]

    def add(self) -> str:
        """Start one more worker node (as many CPUs as the others); returns its id once it has joined."""
        node = self.cluster.add_node(num_cpus=self.cpus)
        self.workers[node.node_id] = node
        self.node_ids.append(node.node_id)
        return str(node.node_id)

    def remove(self, node_id: str) -> None:
        """Kill every process of worker node ``node_id`` at once (no graceful shutdown)."""
        self.cluster.remove_node(self.workers.pop(node_id), allow_graceful=False)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.shutdown()


def start_search(tmp: Path, space_text: str, *args: str, env: dict[str, str] | None = None,
                 log_name: str = "search.log") -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python -m search.run`` on ``space_text`` in ``tmp``; its stderr goes to ``tmp/log_name``."""
    space = tmp / "space.yaml"
    space.write_text(space_text)
    log = tmp / log_name
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--studies-dir", str(tmp / "studies"), *args]
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=stderr,
                                env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    return proc, log


def wait_for_log(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line of ``log`` matching ``pattern``; ``AssertionError`` if the process ends or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if re.search(pattern, line):
                return line
        assert proc.poll() is None, f"search.run ended (rc {proc.returncode}) before {pattern!r}:\n" + tail(log)
        time.sleep(0.2)
    raise AssertionError(f"no line matching {pattern!r} within {timeout:g} s:\n" + tail(log))


def wait_until(what: str, found: Callable[[], T | None], proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 300) -> T:
    """Poll ``found()`` until it returns something; ``AssertionError`` if the search ends first or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := found()) is not None:
            return value
        assert proc.poll() is None, f"search.run ended (rc {proc.returncode}) before {what}:\n{tail(log)}"
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:g} s:\n{tail(log)}")


def tail(log: Path, n: int = 40) -> str:
    """The last ``n`` lines of ``log``."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def load_study(url: str, name: str) -> optuna.Study | None:
    """The study, or ``None`` while it (or its SQLite file, or its schema) does not exist yet.

    A SQLite file is first looked at read-only: loading a study whose schema ``search.run`` is still
    writing would make this process create the tables too, and one of the two would lose that race.
    """
    if url.startswith("sqlite:///") and not sqlite_study_exists(Path(url[len("sqlite:///"):]), name):
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:  # no such study yet
        return None
    except sqlalchemy.exc.SQLAlchemyError:  # a PostgreSQL study whose schema search.run is creating right now
        return None


def sqlite_study_exists(db: Path, name: str) -> bool:
    """Whether SQLite file ``db`` holds a finished Optuna schema and study ``name`` (read-only look)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            if not con.execute("SELECT version_num FROM alembic_version").fetchall():
                return False
            return bool(con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchall())
    except sqlite3.Error:  # no tables yet, or locked while they are written
        return False


def completed_on(study: optuna.Study | None, node_id: str) -> int | None:
    """The first COMPLETE trial that ran on Ray node ``node_id``, or ``None``."""
    done = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("ray_node") == node_id] if study is not None else []
    return done[0] if done else None


def training_trial_on(study: optuna.Study | None, folder: Path, node_id: str, epoch_line: str) -> int | None:
    """A RUNNING trial on Ray node ``node_id`` whose trial process has logged ``epoch_line`` (so it is
    training), or ``None``."""
    if study is None:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("ray_node") != node_id:
            continue
        for log in folder.glob(f"trial_{t.number:04d}_*/trial.log"):
            if epoch_line in log.read_text(errors="replace"):
                return t.number
    return None


def trial_processes(folder: Path) -> list[str]:
    """Command lines of the trial processes still running for trials under ``folder``."""
    out = subprocess.run(["pgrep", "-af", f"trainers.train.trial --job {folder}"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def summary(study: optuna.Study) -> dict[str, Any]:
    """The trials' numbers, states, nodes, fail kinds and retry links (for assertion messages)."""
    return {t.number: (t.state.name, str(t.user_attrs.get("ray_node", ""))[:8], t.user_attrs.get("fail_kind"),
                       t.user_attrs.get("retry_of")) for t in study.trials}
