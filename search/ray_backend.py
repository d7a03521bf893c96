"""``--backend ray``: the same objective, ``--workers`` trials at once through Ray Tune.

A small :class:`~ray.tune.search.Searcher` drives Optuna's ask/tell in this process (so the
study's sampler sees every trial, and sampling happens in one place); each Ray trial runs
:func:`search.objective.run_objective` in a Ray worker, writing user attrs straight into the
same Optuna storage; the searcher tells the outcome. Dashboard and export work unchanged.
Every path handed to Ray is absolute (Ray changes trials' working directory). Successive
halving works unchanged (the objective's rung watcher reads and writes the shared storage from
the Ray worker); ``--timeout``: past it the searcher suggests nothing new and finishes once the
running trials are told.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.config import RunConfig
from search.objective import Outcome, run_objective, sample_architecture
from search.space import SearchSpace
from search.study import count_finished, make_storage
from search.study import trial_id as storage_trial_id
from trainers.architecture import Architecture
from trainers.cli import log


def ray_trial(config: dict[str, Any], space: SearchSpace, cfg: RunConfig) -> dict[str, Any]:
    """Ray Tune trainable: run the objective of the Optuna trial named in ``config``."""
    storage = make_storage(cfg.storage)
    study = optuna.load_study(study_name=cfg.study, storage=storage)
    trial = optuna.trial.Trial(study, storage_trial_id(storage, study, config["number"]))
    arch = Architecture.from_dict(config["architecture"])
    outcome = run_objective(study, trial, space, cfg, prefix=f"[ray trial {config['number']}] ", arch=arch)
    return {"state": outcome.state.name, "values": outcome.values, "note": outcome.note,
            "map50_95": outcome.values[0] if outcome.values else None}


def make_searcher(study: optuna.Study, space: SearchSpace, target: int, deadline: float | None = None) -> Any:
    """A Ray Tune searcher that asks Optuna for trials until ``target`` are finished (or ``deadline``, a
    ``time.time()``, has passed)."""
    from ray.tune.search import Searcher

    class OptunaAskTell(Searcher):
        """Optuna ask/tell as a Ray Tune searcher."""

        def __init__(self) -> None:
            super().__init__()
            self.live: dict[str, optuna.Trial] = {}

        def suggest(self, trial_id: str) -> Any:
            late = deadline is not None and time.time() >= deadline
            if late or count_finished(study) + len(self.live) >= target:
                return Searcher.FINISHED if not self.live else None
            trial = study.ask()
            arch = sample_architecture(trial, space)
            if isinstance(arch, Outcome):
                study.tell(trial, state=arch.state)
                return None
            self.live[trial_id] = trial
            log(f"[ray] trial {trial.number} [{arch.hash}] {arch.blocks_summary()} sent to a worker")
            return {"number": trial.number, "architecture": arch.to_dict()}

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            trial = self.live.pop(trial_id, None)
            if trial is None:
                return
            if error or not result or "state" not in result:
                trial.set_user_attr("fail_kind", "worker_died")
                trial.set_user_attr("fail_reason", "Ray worker failed or died before reporting")
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                return
            state = TrialState[result["state"]]
            study.tell(trial, result["values"] if state == TrialState.COMPLETE else None,
                       state=None if state == TrialState.COMPLETE else state)
            log(f"[ray] trial {trial.number}: {state.name} {result.get('note', '')} | "
                f"{count_finished(study)}/{target} finished")

    return OptunaAskTell()


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


def run_ray(cfg: RunConfig, space: SearchSpace, study: optuna.Study) -> None:
    """Run the missing trials of the study through Ray Tune with ``cfg.workers`` at once."""
    import ray
    from ray import tune

    if count_finished(study) >= cfg.trials:
        return
    env = {"YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "REPNAS_LOCK_DIR": os.environ.get("REPNAS_LOCK_DIR", "")}
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env={"env_vars": env},
                 log_to_driver=True)
    deadline = time.time() + cfg.timeout if cfg.timeout is not None else None  # counted once Ray is up
    try:
        trainable = tune.with_resources(tune.with_parameters(ray_trial, space=space, cfg=cfg),
                                        trial_resources(cfg.workers))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=make_searcher(study, space, cfg.trials, deadline), num_samples=-1,
                                        max_concurrent_trials=cfg.workers),
            run_config=tune.RunConfig(name=f"{cfg.study}_ray", storage_path=str(Path(cfg.root) / "ray"), verbose=0),
        )
        tuner.fit()
    finally:
        ray.shutdown()
