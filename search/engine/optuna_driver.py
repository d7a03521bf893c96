"""The search loop: Optuna ask/tell with heartbeats, N worker threads, then the Pareto report.

Before the report, the baseline and the front's candidates are re-measured together
(:func:`search.engine.interleaved.remeasure_front`) and the front is ranked on those comparable figures.

Each trial's files (architecture, records, ``results.csv``, ``trial.log``) are uploaded as Optuna
artifacts when its work is done, before it is told; the Pareto report after it is written
(:mod:`search.study.artifacts`).

Each worker asks for a trial only while ``finished + running < target``, so several workers
(threads here, or processes sharing a PostgreSQL study) never overshoot the target by more
than the number of workers. A trial interrupted by Ctrl-C or a dying worker is failed with
``fail_kind=worker_died`` and re-enqueued, so it is run again rather than lost.

``--timeout``: past ``cfg.timeout`` seconds after the workers start, no worker asks for a new
trial; running trials finish (successive halving may still stop them at a rung), then the report.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from search.engine.interleaved import remeasure_front
from search.engine.objective import Objective, Outcome, describe
from search.engine.rungs import rung_summary
from search.pareto import format_table, pareto_front, write_report
from search.pareto.presets import format_presets
from search.pareto.report import hypervolume_line
from search.space import SearchSpace
from search.study.artifacts import (
    STUDY_REPORT_FILES,
    artifact_store,
    attach_trial_artifacts,
    dashboard_command,
    upload_study_artifacts,
)
from search.study.config import RunConfig, password_note
from search.study.failures import FailKind, fail_trial
from search.study.outage import StorageUnavailable, describe_storage, exit_on_storage_outage, keep_outage
from search.study.records import read_record
from search.study.storage import (
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
from trainers.latency.report import LatencyReport


def ensure_baseline(study: optuna.Study, space: SearchSpace) -> None:
    """Enqueue the stock model as the study's first trial (once per study)."""
    if any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        return
    params = space.baseline_params()  # {} in a one-architecture space: every trial would count as "existing"
    study.enqueue_trial(params, user_attrs={"baseline": True, "is_baseline": True}, skip_if_exists=bool(params))


def ensure_presets(study: optuna.Study, names: Sequence[str]) -> None:
    """Enqueue each preset architecture (``spaces/presets``) as a trial, once per study (user attr ``preset``); a
    preset whose trials all failed is enqueued again (a rerun retries it, as it resumes everything else)."""
    from search.space.presets import load_preset

    have = {t.user_attrs.get("preset") for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for name in names:
        if name not in have:
            preset = load_preset(name)
            study.enqueue_trial({}, user_attrs={"preset": name, "preset_reference": preset.reference,
                                                "preset_architecture": preset.architecture.to_dict()},
                                skip_if_exists=False)


class Progress:
    """Progress lines: trial k of N, and the current Pareto size after each trial."""

    def __init__(self, study: optuna.Study, cfg: RunConfig):
        self.study, self.cfg, self.target, self.t0 = study, cfg, cfg.trials, time.time()
        self.deadline = self.t0 + cfg.timeout if cfg.timeout is not None else None
        self.stopped: str | None = None

    def why_no_new_trial(self) -> str | None:
        """Why no new trial may start (``--timeout`` passed, ``--epoch-budget`` spent), logged once; else ``None``."""
        if self.stopped is None:
            if self.deadline is not None and time.time() >= self.deadline:
                self.stopped = f"--timeout {self.cfg.timeout:g} s reached"
            elif self.cfg.epoch_budget is not None and trained_epochs(self.study) >= self.cfg.epoch_budget:
                self.stopped = f"--epoch-budget {self.cfg.epoch_budget} epochs trained"
            if self.stopped is not None:
                log(f"{self.stopped}: no new trial starts; waiting for the running ones")
        return self.stopped

    def prefix(self) -> str:
        return f"[{min(count_finished(self.study) + 1, self.target)}/{self.target}] "

    def done(self, trial: optuna.Trial, outcome: Outcome, prefix: str) -> None:
        front = pareto_front(self.study, self.cfg.objectives, self.cfg.constraints)
        log(f"{prefix}{describe(trial)}: {outcome.state.name} {outcome.note} | Pareto size {len(front)} | "
            f"{count_finished(self.study)}/{self.target} finished, {time.time() - self.t0:.0f} s elapsed")


def trained_epochs(study: optuna.Study) -> int:
    """Epochs the study's trials have trained in all (their per-epoch mAP; a reused result trained nothing)."""
    return sum(len(read_record(t, "epoch_map", [])) for t in study.get_trials(deepcopy=False)
               if "reused_from" not in t.user_attrs)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    if outcome.state == TrialState.COMPLETE:
        study.tell(trial, outcome.values)
    else:
        study.tell(trial, state=outcome.state)


def worker_loop(study: optuna.Study, storage: Any, objective: Objective, cfg: RunConfig, progress: Progress,
                gate: threading.Lock, store: FileSystemArtifactStore) -> None:
    """Ask, run and tell trials until the study holds ``cfg.trials`` finished trials (their files into ``store``)."""
    while True:
        with gate:
            started = count_finished(study) + count_running(study, waiting=False)
            if progress.why_no_new_trial() is not None or started >= cfg.trials:
                return
            trial = study.ask()
            prefix = progress.prefix()
        log(f"{prefix}start {describe(trial)}")
        try:
            with heartbeat(storage, trial_id(storage, study, trial.number)):
                outcome = objective.evaluate(study, trial, prefix=prefix)
        except StorageUnavailable:  # nothing can be written: the rerun fails this trial as "worker died"
            raise
        except BaseException as e:
            fail_trial(study, trial, FailKind.WORKER_DIED, f"interrupted: {type(e).__name__}", requeue={})
            raise
        attach_trial_artifacts(store, trial, cfg)  # before the tell: a told trial takes no artifact
        _tell(study, trial, outcome)
        progress.done(trial, outcome, prefix)


@exit_on_storage_outage
def run_search(cfg: RunConfig, objective: Objective) -> int:
    """Run (or resume) the search ``cfg`` describes, scoring trials with ``objective`` (over its space); print and
    write the Pareto report.

    A database unreachable for longer than the outage limit ends it with one line and exit code 3
    (:mod:`search.study.outage`).
    """
    os.environ["REPNAS_LOCK_DIR"] = str(Path(cfg.root) / ".locks")  # one device lock per machine for this root
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")  # ours runs below
    storage = make_storage(cfg.storage)
    sampler = make_sampler(cfg.sampler, cfg.seed, cfg.planned_trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg.study, storage, cfg.objectives, sampler)
    cfg.record_on(study)
    recovered = recover_dead_trials(study, storage)
    if recovered:
        log(f"trials {recovered} had lost their worker: failed as 'worker died' and queued again")
    ensure_baseline(study, objective.space)
    ensure_presets(study, cfg.presets)
    store = artifact_store(cfg)
    have, t = count_finished(study), cfg.trial
    halving = f"rungs at epochs {list(cfg.rungs)}, eta {cfg.eta}" if cfg.rungs else "no rungs"
    log(f"study {cfg.study!r} in {describe_storage(cfg.storage)}: {have} of {cfg.trials} trials finished; "
        f"data {t.data}; train {t.epochs} epochs at {t.imgsz} px ({halving}); latency at {t.latency.imgsz} px")
    if cfg.backend == "ray":
        from search.engine.ray_searcher import run_ray

        run_ray(cfg, objective, study, store)
    elif have < cfg.trials:
        progress, gate = Progress(study, cfg), threading.Lock()
        outages: list[StorageUnavailable] = []  # a worker that met a long outage: raised here, after the join
        threads = [threading.Thread(target=keep_outage(worker_loop, outages), name=f"worker-{i}",
                                    args=(study, storage, objective, cfg, progress, gate, store))
                   for i in range(cfg.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if outages:
            raise outages[0]
    recover_dead_trials(study, storage)
    confirm = cfg.trial.latency_source != "predicted"  # measured, or predicted+confirm: the front measured together
    return report(study, cfg, remeasure_front(study, cfg) if confirm else None, store)


def report(study: optuna.Study, cfg: RunConfig, latency: Mapping[int, LatencyReport] | None = None,
           store: FileSystemArtifactStore | None = None) -> int:
    """Print the Pareto table, hypervolume and file locations; write them to the study folder.

    ``latency``: figures ranking the front instead of the trials' own (the interleaved re-measure).
    ``store``: the study's artifact store, which gets ``pareto.png``, ``pareto.txt`` and ``pareto.json``.
    """
    summary = write_report(study, cfg, latency)
    if store is not None:
        upload_study_artifacts(store, study, [cfg.folder / name for name in STUDY_REPORT_FILES])
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"\nStudy {cfg.study!r}: {count_finished(study)} finished trials ({states})")
    if stopped := rung_summary(study):
        print(stopped)
    print(f"Pareto front ({len(summary['front'])} points, feasible trials only; deltas vs the stock baseline):")
    print(format_table(summary["front"]))
    if latency:
        print(f"Latency: trials {sorted(latency)} re-measured together (interleaved) at the end of the search; "
              "the others keep their own figures")
    if hv := summary["hypervolume"]:
        print(hypervolume_line(hv))
    if summary["presets"]:
        print("Design references (spaces/presets) against the front:")
        print(format_presets(summary["presets"]))
    print(f"Files: {cfg.folder}/pareto.txt, pareto.json {' '.join(summary['plots'])}")
    print(f"Dashboard: {dashboard_command(cfg)}{password_note(cfg.storage)}")
    return 0
