"""``--backend ray``: the same objective, ``--workers`` trials at once through Ray Tune.

A small :class:`~ray.tune.search.Searcher` drives Optuna's ask/tell in this process (so the
study's sampler sees every trial, and sampling happens in one place); each Ray trial runs
the run's :class:`~search.engine.objective.Objective` in a Ray worker, writing user attrs straight into the
same Optuna storage; the searcher tells the outcome. Dashboard and export work unchanged.
Every path handed to Ray is absolute (Ray changes trials' working directory). Successive
halving works unchanged (the objective's rung watcher reads and writes the shared storage from
the Ray worker); ``--timeout``: past it the searcher suggests nothing new and finishes once the
running trials are told.

On a cluster (``--ray-address``) each trial records the Ray node it ran on (user attr ``ray_node``,
the node id; ``host`` names the machine). Faults:

- A node lost mid-trial (its machine, raylet or worker process dies): Ray does not retry the trial
  (``FailureConfig(max_failures=0)``); Tune reports it errored, and the searcher fails it with
  ``fail_kind=worker_died`` and queues its parameters again (user attr ``retry_of``), so the next free
  worker, on any remaining node, runs it. A trial that errors :data:`MAX_RETRIES` times in a row is
  failed for good (``fail_kind=error``), so a trial that always crashes cannot loop forever.
- The driver lost: the searcher sends the Optuna heartbeats of the trials it has handed out, so when
  the driver dies (and Ray kills its trials) they go stale; the driver's own host and pid are on each
  trial from the moment it is asked, so the same command started again on that machine fails them at
  once as "worker died" and runs them again (:func:`search.study.storage.recover_dead_trials`), on another
  machine after the grace period. The searcher also fails other drivers' stale trials while it runs.
- The database unreachable: every storage call waits (:mod:`search.study.outage`).

Each trial's files are uploaded as Optuna artifacts by the searcher, in this process, before it
tells the trial (:mod:`search.study.artifacts`; files a worker wrote on another machine are not found
here and are left out, its architecture and records are not).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search.engine.objective import Objective, Outcome
from search.study.artifacts import attach_trial_artifacts
from search.study.config import RunConfig
from search.study.failures import FailKind, fail_trial
from search.study.outage import OutageTolerantStorage, StorageUnavailable, outage_limit_s
from search.study.storage import (
    HEARTBEAT_INTERVAL_S,
    count_finished,
    fail_stale_trials,
    make_storage,
    periodically,
    worker_identity,
)
from search.study.storage import trial_id as storage_trial_id
from trainers.cli import log
from trainers.model.architecture import Architecture

MAX_RETRIES = 3


def ray_trial(config: dict[str, Any], objective: Objective, cfg: RunConfig) -> dict[str, Any]:
    """Ray Tune trainable: evaluate the Optuna trial named in ``config`` with ``objective`` on this Ray node."""
    import ray

    storage = make_storage(cfg.storage)
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    trial = optuna.trial.Trial(study, storage_trial_id(storage, study, config["number"]))
    node = ray.get_runtime_context().get_node_id()
    trial.set_user_attr("ray_node", node)
    arch = Architecture.from_dict(config["architecture"])
    outcome = objective.evaluate(study, trial, prefix=f"[ray trial {config['number']}] ", arch=arch)
    trial.set_user_attr("ray_node", node)  # again: a reused result copies the earlier trial's attrs
    return {"state": outcome.state.name, "values": outcome.values, "note": outcome.note,
            "map50_95": outcome.values[0] if outcome.values else None}


class OptunaAskTell(Searcher):
    """Optuna ask/tell as a Ray Tune searcher: asks for trials until ``target`` are finished (or ``deadline``, a
    ``time.time()``, has passed); ``objective`` samples each trial's architecture here, in the driver.

    With ``storage`` (the study's), :meth:`beat` sends the heartbeats of the trials handed out and not yet told.
    ``before_tell``: called with each trial its worker reported on, before the trial is told (its artifacts).
    """

    def __init__(self, study: optuna.Study, objective: Objective, target: int, deadline: float | None = None,
                 storage: OutageTolerantStorage | None = None,
                 before_tell: Callable[[optuna.Trial], None] | None = None) -> None:
        super().__init__()
        self.study, self.objective, self.target, self.deadline = study, objective, target, deadline
        self.storage, self.before_tell = storage, before_tell
        self.live: dict[str, optuna.Trial] = {}
        self.ids: dict[str, int] = {}  # storage ids of the live trials (what heartbeats take)
        self.lock = threading.Lock()
        self.checked = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its searcher with the experiment's state
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def beat(self) -> None:
        """Record a heartbeat for every trial handed out and not yet told."""
        with self.lock:
            ids = list(self.ids.values())
        for tid in ids:
            if self.storage is not None:
                self.storage.record_heartbeat(tid)

    def suggest(self, trial_id: str) -> Any:
        """The next trial's number and architecture; ``None`` to wait; ``FINISHED`` when the target is reached."""
        study = self.study
        self._fail_stale_trials()
        late = self.deadline is not None and time.time() >= self.deadline
        if late or count_finished(study) + len(self.live) >= self.target:
            return Searcher.FINISHED if not self.live else None
        trial = study.ask()
        for key, value in worker_identity().items():  # the driver's, until the worker writes its own
            trial.set_user_attr(key, value)
        arch = self.objective.sample(trial)
        if isinstance(arch, Outcome):
            study.tell(trial, state=arch.state)
            return None
        with self.lock:
            self.live[trial_id] = trial
            if self.storage is not None:
                self.ids[trial_id] = storage_trial_id(self.storage, study, trial.number)
        self.beat()
        log(f"[ray] trial {trial.number} [{arch.hash}] {arch.blocks_summary()} sent to a worker")
        return {"number": trial.number, "architecture": arch.to_dict()}

    def _fail_stale_trials(self) -> None:
        """Now and then: fail (and re-queue) trials of dead drivers; ours are beaten first, never stale."""
        if self.storage is None or time.time() - self.checked < HEARTBEAT_INTERVAL_S:
            return
        self.beat()
        fail_stale_trials(self.study)
        self.checked = time.time()

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Tell the study how the trial ended (re-queue it when its worker died before reporting)."""
        with self.lock:
            trial = self.live.pop(trial_id, None)
            self.ids.pop(trial_id, None)
        if trial is None:
            return
        if error or not result or "state" not in result:
            requeue_lost_trial(self.study, trial)
            return
        state = TrialState[result["state"]]
        if self.before_tell is not None:
            self.before_tell(trial)
        self.study.tell(trial, result["values"] if state == TrialState.COMPLETE else None,
                        state=None if state == TrialState.COMPLETE else state)
        log(f"[ray] trial {trial.number}: {state.name} {result.get('note', '')} | "
            f"{count_finished(self.study)}/{self.target} finished")


def requeue_lost_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail a trial whose Ray worker died or errored before reporting, and queue its parameters again
    (:func:`~search.study.failures.retry_attrs`, plus ``retries``); after :data:`MAX_RETRIES` retries, fail it
    for good."""
    retries = int(trial.user_attrs.get("retries", 0))
    if retries >= MAX_RETRIES:
        fail_trial(study, trial, FailKind.ERROR,
                   f"Ray worker failed or died before reporting, {retries + 1} times in a row")
        log(f"[ray] trial {trial.number}: FAIL, its worker failed {retries + 1} times in a row; not retried")
        return
    fail_trial(study, trial, FailKind.WORKER_DIED, "Ray worker failed or died before reporting (node lost?); queued "
               "again", requeue={"retries": retries + 1})
    log(f"[ray] trial {trial.number}: its worker died before reporting; failed as 'worker died' and queued again")


def trial_resources(workers: int) -> dict[str, float]:
    """Per-trial resources: a GPU fraction each when CUDA is present, CPUs split otherwise."""
    import ray
    import torch

    cpus = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    gpus = float(ray.cluster_resources().get("GPU", 0)) if torch.cuda.is_available() else 0.0
    res = {"cpu": max(1.0, cpus // workers) if cpus >= workers else cpus / workers}
    if gpus:
        res["gpu"] = min(1.0, gpus / workers)
    return res


def ray_env() -> dict[str, str]:
    """Environment variables every Ray worker gets (the trials' processes inherit them)."""
    env = {"YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "REPNAS_LOCK_DIR": os.environ.get("REPNAS_LOCK_DIR", "")}
    env["REPNAS_STORAGE_OUTAGE_S"] = str(outage_limit_s())  # the same outage limit in the driver and the workers
    return env


def run_ray(cfg: RunConfig, objective: Objective, study: optuna.Study,
            store: FileSystemArtifactStore | None = None) -> None:
    """Run the missing trials of the study through Ray Tune with ``cfg.workers`` at once (their files into
    ``store``)."""
    import ray
    from ray import tune

    if count_finished(study) >= cfg.trials:
        return
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, runtime_env={"env_vars": ray_env()}, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env={"env_vars": ray_env()},
                 log_to_driver=True)
    deadline = time.time() + cfg.timeout if cfg.timeout is not None else None  # counted once Ray is up
    try:
        trainable = tune.with_resources(tune.with_parameters(ray_trial, objective=objective, cfg=cfg),
                                        trial_resources(cfg.workers))
        attach = (lambda trial: attach_trial_artifacts(store, trial, cfg)) if store is not None else None
        searcher = OptunaAskTell(study, objective, cfg.trials, deadline, storage=make_storage(cfg.storage),
                                 before_tell=attach)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=cfg.workers),
            run_config=tune.RunConfig(name=f"{cfg.study}_ray", storage_path=str(Path(cfg.root) / "ray"), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),  # the searcher re-queues
        )
        with periodically(searcher.beat, "ray-heartbeats"):
            tuner.fit()
    except Exception as e:
        outage = outage_of(e)
        if outage is None:
            raise
        raise outage from e
    finally:
        ray.shutdown()


def outage_of(exc: BaseException | None) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` that ``exc`` (Tune wraps what its searcher raised) came from, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StorageUnavailable):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
