"""``--backend ray``: the same objective, ``--workers`` trials at once through Ray Tune.

A small :class:`~ray.tune.search.Searcher` drives Optuna's ask/tell in this process (so the
study's sampler sees every trial, and sampling happens in one place); each Ray trial runs
:func:`search.engine.per_trial.run_objective` in a Ray worker, writing user attrs straight into the
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

from search.engine.per_trial import Outcome, run_objective, sample_architecture
from search.space import SearchSpace
from search.study.artifacts import attach_trial_artifacts
from search.study.config import RunConfig
from search.study.outage import OutageTolerantStorage, StorageUnavailable, outage_limit_s
from search.study.storage import (
    HEARTBEAT_INTERVAL_S,
    count_finished,
    make_storage,
    periodically,
    retry_attrs,
    worker_identity,
)
from search.study.storage import trial_id as storage_trial_id
from trainers.cli import log
from trainers.model.architecture import Architecture

MAX_RETRIES = 3


def ray_trial(config: dict[str, Any], space: SearchSpace, cfg: RunConfig) -> dict[str, Any]:
    """Ray Tune trainable: run the objective of the Optuna trial named in ``config`` on this Ray node."""
    import ray

    storage = make_storage(cfg.storage)
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    trial = optuna.trial.Trial(study, storage_trial_id(storage, study, config["number"]))
    node = ray.get_runtime_context().get_node_id()
    trial.set_user_attr("ray_node", node)
    arch = Architecture.from_dict(config["architecture"])
    outcome = run_objective(study, trial, space, cfg, prefix=f"[ray trial {config['number']}] ", arch=arch)
    trial.set_user_attr("ray_node", node)  # again: a reused result copies the earlier trial's attrs
    return {"state": outcome.state.name, "values": outcome.values, "note": outcome.note,
            "map50_95": outcome.values[0] if outcome.values else None}


def make_searcher(study: optuna.Study, space: SearchSpace, target: int, deadline: float | None = None,
                  storage: OutageTolerantStorage | None = None,
                  before_tell: Callable[[optuna.Trial], None] | None = None) -> Any:
    """A Ray Tune searcher that asks Optuna for trials until ``target`` are finished (or ``deadline``, a
    ``time.time()``, has passed). With ``storage`` (the study's), its ``beat()`` sends the heartbeats of the
    trials it has handed out and not yet told. ``before_tell``: called with each trial its worker reported
    on, before the trial is told (its artifacts)."""
    from ray.tune.search import Searcher

    class OptunaAskTell(Searcher):
        """Optuna ask/tell as a Ray Tune searcher."""

        def __init__(self) -> None:
            super().__init__()
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
                if storage is not None:
                    storage.record_heartbeat(tid)

        def suggest(self, trial_id: str) -> Any:
            self._fail_stale_trials()
            late = deadline is not None and time.time() >= deadline
            if late or count_finished(study) + len(self.live) >= target:
                return Searcher.FINISHED if not self.live else None
            trial = study.ask()
            for key, value in worker_identity().items():  # the driver's, until the worker writes its own
                trial.set_user_attr(key, value)
            arch = sample_architecture(trial, space)
            if isinstance(arch, Outcome):
                study.tell(trial, state=arch.state)
                return None
            with self.lock:
                self.live[trial_id] = trial
                if storage is not None:
                    self.ids[trial_id] = storage_trial_id(storage, study, trial.number)
            self.beat()
            log(f"[ray] trial {trial.number} [{arch.hash}] {arch.blocks_summary()} sent to a worker")
            return {"number": trial.number, "architecture": arch.to_dict()}

        def _fail_stale_trials(self) -> None:
            """Now and then: fail (and re-queue) trials of dead drivers; ours are beaten first, never stale."""
            if storage is None or time.time() - self.checked < HEARTBEAT_INTERVAL_S:
                return
            self.beat()
            optuna.storages.fail_stale_trials(study)
            self.checked = time.time()

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            with self.lock:
                trial = self.live.pop(trial_id, None)
                self.ids.pop(trial_id, None)
            if trial is None:
                return
            if error or not result or "state" not in result:
                requeue_lost_trial(study, trial)
                return
            state = TrialState[result["state"]]
            if before_tell is not None:
                before_tell(trial)
            study.tell(trial, result["values"] if state == TrialState.COMPLETE else None,
                       state=None if state == TrialState.COMPLETE else state)
            log(f"[ray] trial {trial.number}: {state.name} {result.get('note', '')} | "
                f"{count_finished(study)}/{target} finished")

    return OptunaAskTell()


def requeue_lost_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Fail a trial whose Ray worker died or errored before reporting, and queue its parameters again
    (:func:`~search.study.storage.retry_attrs`, plus ``retries``); after :data:`MAX_RETRIES` retries, fail it
    for good."""
    retries = int(trial.user_attrs.get("retries", 0))
    if retries >= MAX_RETRIES:
        trial.set_user_attr("fail_kind", "error")
        trial.set_user_attr("fail_reason", f"Ray worker failed or died before reporting, {retries + 1} times in a row")
        study.tell(trial, state=TrialState.FAIL)
        log(f"[ray] trial {trial.number}: FAIL, its worker failed {retries + 1} times in a row; not retried")
        return
    trial.set_user_attr("fail_kind", "worker_died")
    trial.set_user_attr("fail_reason", "Ray worker failed or died before reporting (node lost?); queued again")
    study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={**retry_attrs(trial), "retries": retries + 1})
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


def run_ray(cfg: RunConfig, space: SearchSpace, study: optuna.Study,
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
        trainable = tune.with_resources(tune.with_parameters(ray_trial, space=space, cfg=cfg),
                                        trial_resources(cfg.workers))
        attach = (lambda trial: attach_trial_artifacts(store, trial, cfg)) if store is not None else None
        searcher = make_searcher(study, space, cfg.trials, deadline, storage=make_storage(cfg.storage),
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
