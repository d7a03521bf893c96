"""The search loop: Optuna ask/tell with heartbeats, N worker threads, then the Pareto report.

Each worker asks for a trial only while ``finished + running < target``, so several workers
(threads here, or processes sharing a PostgreSQL study) never overshoot the target by more
than the number of workers. A trial interrupted by Ctrl-C or a dying worker is failed with
``fail_kind=worker_died`` and re-enqueued, so it is run again rather than lost.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from search.objective import Outcome, SearchSettings, describe, run_objective
from search.pareto import format_table, pareto_front, write_report
from search.study import (
    count_finished,
    count_running,
    heartbeat,
    make_sampler,
    make_storage,
    open_study,
    recover_dead_trials,
    trial_id,
)
from trainers.cli import log
from trainers.results import TrialSettings


def data_yaml(cfg: Any) -> str:
    """The data YAML of the run: ``--data``, the space's, or the embedded synthetic set (generated once)."""
    if cfg.args.data:
        return cfg.args.data
    from trainers.data import ensure_synth

    return str(Path(ensure_synth(cfg.root / "data" / "synth")).resolve())


def class_count(data: str) -> int:
    """Number of classes of an Ultralytics data YAML (``nc`` or ``names``)."""
    d = yaml.safe_load(Path(data).read_text())
    return int(d["nc"]) if "nc" in d else len(d["names"])


def search_settings(cfg: Any) -> SearchSettings:
    """Trial settings from the space's ``train``/``latency`` sections, overridden by CLI flags."""
    a, spec = cfg.args, cfg.space.spec
    data = data_yaml(cfg)
    trial = TrialSettings(
        data=data, out=str(cfg.root / cfg.study), epochs=a.epochs or spec.train.epochs,
        imgsz=a.imgsz or spec.train.imgsz, batch=a.batch or spec.train.batch,
        device=a.device if a.device != "auto" else spec.latency.device,
        latency_imgsz=spec.latency.imgsz, latency_device=a.device if a.device != "auto" else spec.latency.device,
        latency_dtype=spec.latency.dtype, latency_cache=str(cfg.root / "latency_cache.json"), seed=a.seed,
    )
    return SearchSettings(space=cfg.space, trial=trial, nc=class_count(data), latency_budget_ms=a.latency_budget_ms,
                          trial_timeout=a.trial_timeout)


def record_study_settings(study: optuna.Study, cfg: Any, ctx: SearchSettings) -> None:
    """Keep the space's objectives, constraints and settings on the study (retrain/export read them)."""
    spec, t = ctx.space.spec, ctx.trial
    study.set_user_attr("space", str(Path(cfg.args.space).resolve()))
    study.set_user_attr("objectives", [list(o) for o in spec.objectives])
    study.set_user_attr("constraints", [str(c) for c in spec.constraints])
    study.set_user_attr("latency", {"imgsz": t.latency_imgsz, "device": t.latency_device, "dtype": t.latency_dtype})
    study.set_user_attr("train", {"data": t.data, "epochs": t.epochs, "imgsz": t.imgsz, "batch": t.batch})


def ensure_baseline(study: optuna.Study, ctx: SearchSettings) -> None:
    """Enqueue the stock model as the study's first trial (once per study)."""
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(ctx.space.baseline_params(), user_attrs={"baseline": True, "is_baseline": True},
                        skip_if_exists=True)


class Progress:
    """Progress lines: trial k of N, and the current Pareto size after each trial."""

    def __init__(self, study: optuna.Study, ctx: SearchSettings, target: int):
        self.study, self.ctx, self.target, self.t0 = study, ctx, target, time.time()

    def prefix(self) -> str:
        return f"[{min(count_finished(self.study) + 1, self.target)}/{self.target}] "

    def done(self, trial: optuna.Trial, outcome: Outcome, prefix: str) -> None:
        spec = self.ctx.space.spec
        front = pareto_front(self.study, spec.objectives, spec.constraints)
        log(f"{prefix}{describe(trial)}: {outcome.state.name} {outcome.note} | Pareto size {len(front)} | "
            f"{count_finished(self.study)}/{self.target} finished, {time.time() - self.t0:.0f} s elapsed")


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    if outcome.state == TrialState.COMPLETE:
        study.tell(trial, outcome.values)
    else:
        study.tell(trial, state=outcome.state)


def worker_loop(study: optuna.Study, storage: Any, ctx: SearchSettings, target: int, progress: Progress,
                gate: threading.Lock) -> None:
    """Ask, run and tell trials until the study holds ``target`` finished trials."""
    while True:
        with gate:
            if count_finished(study) + count_running(study, waiting=False) >= target:
                return
            trial = study.ask()
            prefix = progress.prefix()
        log(f"{prefix}start {describe(trial)}")
        try:
            with heartbeat(storage, trial_id(storage, study, trial.number)):
                outcome = run_objective(study, trial, ctx, prefix=prefix)
        except BaseException as e:
            trial.set_user_attr("fail_kind", "worker_died")
            trial.set_user_attr("fail_reason", f"interrupted: {type(e).__name__}")
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        _tell(study, trial, outcome)
        progress.done(trial, outcome, prefix)


def run_search(cfg: Any) -> int:
    """Run (or resume) the search described by a validated :class:`search.run.RunConfig`."""
    os.environ["REPNAS_LOCK_DIR"] = str(cfg.root / ".locks")  # one device lock per machine for this study root
    ctx = search_settings(cfg)
    a = cfg.args
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")  # ours runs below
    storage = make_storage(cfg.storage)
    sampler = make_sampler(a.sampler, a.seed, a.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg.study, storage, cfg.space.spec.objectives, sampler)
    record_study_settings(study, cfg, ctx)
    recovered = recover_dead_trials(study, storage)
    if recovered:
        log(f"trials {recovered} had lost their worker: failed as 'worker died' and queued again")
    ensure_baseline(study, ctx)
    have = count_finished(study)
    log(f"study {cfg.study!r} in {cfg.storage}: {have} of {a.trials} trials finished; data {ctx.trial.data}; "
        f"train {ctx.trial.epochs} epochs at {ctx.trial.imgsz} px; latency at {ctx.trial.latency_imgsz} px")
    if a.backend == "ray":
        from search.ray_backend import run_ray

        run_ray(cfg, ctx, study)
    elif have < a.trials:
        progress, gate = Progress(study, ctx, a.trials), threading.Lock()
        threads = [threading.Thread(target=worker_loop, args=(study, storage, ctx, a.trials, progress, gate),
                                    name=f"worker-{i}") for i in range(a.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    recover_dead_trials(study, storage)
    return report(study, cfg, ctx)


def report(study: optuna.Study, cfg: Any, ctx: SearchSettings) -> int:
    """Print the Pareto table, hypervolume and file locations; write them to the study folder."""
    spec = ctx.space.spec
    folder = cfg.root / cfg.study
    summary = write_report(study, folder, spec.objectives, spec.constraints)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"\nStudy {cfg.study!r}: {count_finished(study)} finished trials ({states})")
    print(f"Pareto front ({len(summary['front'])} points, feasible trials only; deltas vs the stock baseline):")
    print(format_table(summary["front"]))
    hv = summary["hypervolume"]
    if hv:
        ref = hv["reference"]
        print(f"Hypervolume {hv['hypervolume']:.4f} (reference: mAP50-95 {ref['map50_95']:g}, "
              f"latency {ref['latency_ms']:.2f} ms = 2x baseline)")
    print(f"Files: {folder}/pareto.txt, pareto.json {' '.join(summary['plots'])}")
    print(f"Dashboard: optuna-dashboard {cfg.storage}")
    return 0
