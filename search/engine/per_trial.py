"""What the search does with one Optuna trial: sample, measure, maybe reject, train, record.

One path, on which nothing is built, measured or converted twice: the architecture is built
once here and its params, GFLOPs and latency are measured on that model, before training, at
the deployment size (:func:`trainers.train.trial.measure_pre_training`). An architecture over the
latency budget, or breaking a constraint known before training, is PRUNED with its reason and
never trained. Otherwise one :class:`~trainers.train.results.TrialJob` (architecture, settings, those
figures) goes to the trial process, which builds the model once more in its own process and
trains it, without measuring again. The same architecture sampled twice reuses the earlier
trial's outcome; while that trial still trains on a live worker (here, another thread, another
``search.run``, a Ray worker), the later one waits for it (:func:`reusable_trial`): an architecture
is trained once, also by workers that join the study while it trains.

Everything a trial knows is written on it: short values people scan as user attrs (``hash``,
``blocks``, ``params``, ``gflops``, the one-line ``latency``), the rest as records
(:mod:`search.study.records`: ``architecture``, the ``latency`` report, ``metrics`` holding the objective
values by name, ``epoch_map``, ``versions``).

With rungs (successive halving, :mod:`search.engine.rungs`), a :class:`~search.engine.rungs.RungWatcher`
records the trial's per-epoch mAP as it trains (record ``epoch_map``) and, at each rung, stops it
unless it ranks in the top 1/eta there or no trial there dominates it: it ends PRUNED with a
``prune_reason`` naming the rung.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.engine.objective import Outcome
from search.engine.warm_start import resolve_baseline
from search.space import Constraint, SearchSpace
from search.study.config import RunConfig
from search.study.failures import record_failure
from search.study.records import is_record, read_record, records_of, write_record
from search.study.storage import stale_trial_numbers, worker_alive, worker_identity
from trainers.cli import log
from trainers.model.architecture import Architecture
from trainers.train.results import FailKind, PreTraining, TrialFailure, TrialJob, TrialResult

PRE_TRAINING_METRICS = ("params_m", "gflops", "latency_ms")
# user attrs of the trial run, not of its result
NOT_COPIED = ("host", "pid", "baseline", "retry_of", "preset", "preset_reference", "preset_architecture")
CLAIM_POLL_S = 2.0  # how often a trial waiting for another one's result of the same architecture looks again
UNRECORDED_CLAIM_S = 30.0  # how long a RUNNING trial whose architecture is not recorded yet may hold a claim


def architecture_of_trial(trial: optuna.Trial, space: SearchSpace) -> Architecture:
    """Sample the trial's architecture; the enqueued baseline trial is exactly the stock model, an enqueued preset
    trial its preset's architecture (sampling nothing: it need not be in the space)."""
    if (preset := trial.user_attrs.get("preset_architecture")) is not None:
        return Architecture.from_dict(preset)
    arch = space.suggest(trial)
    return space.baseline() if trial.user_attrs.get("baseline") else arch


def earlier_trial(study: optuna.Study, arch_hash: str, number: int) -> FrozenTrial | None:
    """A finished trial of the same architecture (COMPLETE preferred), if any."""
    same = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                  TrialState.FAIL))
            if t.user_attrs.get("hash") == arch_hash and t.number != number and "reused_from" not in t.user_attrs
            and (t.state != TrialState.FAIL or t.user_attrs.get("fail_kind") not in (None, FailKind.WORKER_DIED.value))]
    same.sort(key=lambda t: (t.state != TrialState.COMPLETE, t.number))
    return same[0] if same else None


def training_claim(study: optuna.Study, arch_hash: str, number: int) -> FrozenTrial | None:
    """The earlier trial that holds the claim on ``arch_hash``: a RUNNING trial numbered below ``number``, of a live
    worker (:func:`~search.study.storage.worker_alive`), whose architecture is ``arch_hash`` or not recorded yet
    (asked moments ago: it may be the same; not after :data:`UNRECORDED_CLAIM_S`)."""
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < number]
    if not running:
        return None
    stale, now = stale_trial_numbers(study), datetime.now()
    for t in sorted(running, key=lambda t: t.number):
        recorded = t.user_attrs.get("hash")
        fresh = t.datetime_start is not None and (now - t.datetime_start).total_seconds() < UNRECORDED_CLAIM_S
        if (recorded == arch_hash or (recorded is None and fresh)) and worker_alive(t, stale):
            return t
    return None


def reusable_trial(study: optuna.Study, arch_hash: str, number: int, prefix: str = "") -> FrozenTrial | None:
    """The finished trial of ``arch_hash`` whose result trial ``number`` reuses, or ``None`` to train it.

    While an earlier trial of a live worker trains the same architecture (:func:`training_claim`), wait for it:
    the lowest-numbered trial trains, the others reuse its result. A claim whose worker dies (its heartbeat goes
    stale, or its process is gone on this host) is no longer waited for.
    """
    waited: int | None = None
    while (claim := training_claim(study, arch_hash, number)) is not None:
        if claim.number != waited:
            log(f"{prefix}trial {claim.number} is training the same architecture: waiting for its result")
            waited = claim.number
        time.sleep(CLAIM_POLL_S)
    return earlier_trial(study, arch_hash, number)


def reuses(trial: optuna.Trial, prev: FrozenTrial) -> bool:
    """Whether ``trial`` takes the result of ``prev`` (same architecture): always, except a preset trial that a
    rerun enqueued again after ``prev`` failed, which is tried again."""
    return not (prev.state == TrialState.FAIL and trial.user_attrs.get("preset"))


def broken_constraints(constraints: tuple[Constraint, ...], metrics: dict[str, float]) -> list[str]:
    """The constraints whose metric is known and that do not hold."""
    return [str(c) for c in constraints if c.metric in metrics and c.violation(metrics[c.metric]) > 0]


def set_constraints(trial: optuna.Trial, constraints: tuple[Constraint, ...], metrics: dict[str, float]) -> None:
    """Report every constraint whose metric is known (Optuna: feasible when <= 0)."""
    for c in constraints:
        if c.metric in metrics:
            trial.set_constraint(str(c), c.violation(metrics[c.metric]))


def reuse_result(trial: optuna.Trial, prev: FrozenTrial, cfg: RunConfig) -> Outcome:
    """``prev``'s outcome (an earlier trial of the same architecture), its records and attrs copied onto ``trial``."""
    for key, value in records_of(prev).items():
        write_record(trial, key, value)
    for key, value in prev.user_attrs.items():
        if key not in NOT_COPIED and not is_record(value):  # a legacy study's records were copied above
            trial.set_user_attr(key, value)
    trial.set_user_attr("reused_from", prev.number)
    if metrics := read_record(prev, "metrics"):
        set_constraints(trial, cfg.constraints, metrics)
    note = f"same architecture as trial {prev.number}: reused its result"
    return Outcome(prev.state, list(prev.values) if prev.state == TrialState.COMPLETE else None, note)


def _pre_training(trial: optuna.Trial, arch: Architecture, cfg: RunConfig) -> PreTraining:
    """Build ``arch`` once and measure what is known before training; record it on the trial."""
    from trainers.model.build import build_model
    from trainers.train.trial import measure_pre_training

    assert cfg.trial.nc is not None, "the run configuration's class count is resolved by search.run"
    pre = measure_pre_training(build_model(arch, nc=cfg.trial.nc), arch.hash, cfg.trial)
    record_pre_training(trial, pre)
    return pre


def record_pre_training(trial: optuna.Trial, pre: PreTraining) -> None:
    """Record what is known before training: ``params``, ``gflops`` and the one-line ``latency`` as user attrs,
    the full latency report as the record ``latency``."""
    write_record(trial, "latency", {**pre.latency.to_dict(), "cached": pre.latency_cached})
    trial.set_user_attr("params", pre.params)
    trial.set_user_attr("gflops", pre.gflops)
    trial.set_user_attr("latency", pre.latency.one_line())
    trial.set_user_attr("latency_source", pre.latency.post if pre.latency.mode == "predicted" else "measured")


def sample_architecture(trial: optuna.Trial, space: SearchSpace) -> Architecture | Outcome:
    """Sample the trial's architecture and record it, or the failure to build one."""
    try:
        arch = architecture_of_trial(trial, space)
    except ValueError as e:
        return failed_outcome(trial, TrialFailure(FailKind.BUILD, str(e)))
    record_architecture(trial, arch)
    return arch


def record_architecture(trial: optuna.Trial, arch: Architecture) -> None:
    """Record the trial's architecture: the record ``architecture``, user attrs ``hash`` and ``blocks``."""
    write_record(trial, "architecture", arch.to_dict())
    trial.set_user_attr("hash", arch.hash)
    trial.set_user_attr("blocks", arch.blocks_summary())


def run_objective(study: optuna.Study, trial: optuna.Trial, space: SearchSpace, cfg: RunConfig, prefix: str = "",
                  arch: Architecture | None = None) -> Outcome:
    """Do everything for one trial and return how it ends (the caller tells the study).

    ``arch``: already sampled (by a driver that asks in another process); else sampled here.
    """
    from trainers.versions import versions

    for key, value in worker_identity().items():
        trial.set_user_attr(key, value)
    write_record(trial, "versions", versions())
    if arch is None:
        sampled = sample_architecture(trial, space)
        if isinstance(sampled, Outcome):
            return sampled
        arch = sampled
    prev = reusable_trial(study, arch.hash, trial.number, prefix)
    if prev is not None and reuses(trial, prev):
        return reuse_result(trial, prev, cfg)
    try:
        pre = _pre_training(trial, arch, cfg)
    except Exception as e:  # an architecture that cannot be built or run is a failure of the architecture
        return failed_outcome(trial, TrialFailure(FailKind.BUILD, f"{type(e).__name__}: {e}"[:500], arch.hash))
    metrics = pre.metrics
    set_constraints(trial, cfg.constraints, metrics)
    if trial.user_attrs.get("preset"):  # asked for by name: trained even when infeasible, to show where it lands
        return _train(study, trial, arch, pre, cfg, prefix)
    if over := over_budget(cfg, pre):
        return pruned_outcome(trial, metrics, f"{over}: not trained")
    if broken := broken_constraints(cfg.constraints, metrics):
        return pruned_outcome(trial, metrics, f"breaks {', '.join(broken)} before training: not trained")
    return _train(study, trial, arch, pre, cfg, prefix)


def over_budget(cfg: RunConfig, pre: PreTraining) -> str | None:
    """``latency X ms > budget Y ms`` when the trial's figure breaks ``--latency-budget-ms``, else ``None``.

    A measured figure is held to the budget exactly; a predicted one with the predictor's margin, so a model the
    predictor wrongly puts over the budget is not pruned (the confirmation decides)."""
    if cfg.latency_budget_ms is None:
        return None
    budget = cfg.latency_budget_ms
    if pre.latency.mode == "predicted":
        budget *= 1 + cfg.latency_margin_pct / 100
    ms = pre.latency.median_ms
    return f"latency {ms:.2f} ms > budget {cfg.latency_budget_ms:g} ms" if ms > budget else None


def _train(study: optuna.Study, trial: optuna.Trial, arch: Architecture, pre: PreTraining, cfg: RunConfig,
           prefix: str) -> Outcome:
    """Train ``arch`` in its own process, watched at the rungs; record the result."""
    from search.engine.rungs import RungWatcher
    from search.engine.runner import TrialStopped, run_trial_process

    metrics = pre.metrics
    settings = replace(cfg.trial, out=str(cfg.trial_folder(trial.number, arch.hash)))
    try:  # --teacher/--init-from baseline: trial 0's checkpoint (waited for while another worker trains it)
        settings = resolve_baseline(study, trial, settings, cfg.trial_timeout)
    except ValueError as e:
        return failed_outcome(trial, TrialFailure(FailKind.ERROR, str(e), arch.hash))
    write_record(trial, "metrics", metrics)  # known before training: other trials' rungs compare with it
    job = TrialJob(arch, settings, pre)
    if cfg.rungs:  # successive halving: each epoch's mAP recorded as it comes, a rung may stop the trial
        watcher = RungWatcher(study, trial, cfg, prefix)
        result = run_trial_process(job, prefix=prefix, timeout=cfg.trial_timeout, on_epoch=watcher.on_epoch)
    else:
        watcher, result = None, run_trial_process(job, prefix=prefix, timeout=cfg.trial_timeout)
    if isinstance(result, TrialFailure):
        return failed_outcome(trial, result)
    if isinstance(result, TrialStopped):
        assert watcher is not None and watcher.stopped is not None, "only a rung stops a trial"
        write_record(trial, "stopped_at", watcher.stopped.to_dict())
        return pruned_outcome(trial, metrics, f"stopped at {watcher.stopped.reason(settings.epochs)}")
    metrics.update(map50_95=result.map50_95, map50=result.map50, **result.int8_metrics)
    set_constraints(trial, tuple(c for c in cfg.constraints if c.metric not in PRE_TRAINING_METRICS), metrics)
    write_record(trial, "metrics", metrics)
    write_record(trial, "epoch_map", list(result.epoch_map))
    record_warm_start(trial, result)
    if result.int8:
        write_record(trial, "int8", result.int8)
        for key, figure in result.int8_metrics.items():
            trial.set_user_attr(key, figure)
    for key, value in {"map50_95": result.map50_95, "weights": result.weights, "train_seconds": result.train_seconds,
                       "device": result.device, "epochs": result.epochs,
                       "epoch_threads": list(result.epoch_threads)}.items():
        trial.set_user_attr(key, value)
    values = [metrics[m] for m, _ in cfg.objectives]
    return Outcome(TrialState.COMPLETE, values, f"mAP50-95 {result.map50_95:.3f}, latency "
                   f"{metrics['latency_ms']:.2f} ms, trained in {result.train_seconds:.0f} s")


def record_warm_start(trial: optuna.Trial, result: TrialResult) -> None:
    """The teacher and initialisation of a trained trial: one-line user attrs and full records."""
    for key in ("teacher", "init_from"):
        info = getattr(result, key)
        if info:
            trial.set_user_attr(key, f"{info['sha256'][:12]} {info['architecture']} ({info['blocks']})")
            write_record(trial, key, info)
    if result.inherited:
        trial.set_user_attr("inherited_share", result.inherited["share"])
        write_record(trial, "inherited", result.inherited)


def pruned_outcome(trial: optuna.Trial, metrics: dict[str, float], reason: str) -> Outcome:
    """Prune ``trial`` for ``reason`` (recorded as ``prune_reason``), keeping the metrics known so far."""
    write_record(trial, "metrics", metrics)
    trial.set_user_attr("prune_reason", reason)
    return Outcome(TrialState.PRUNED, None, f"pruned: {reason}")


def failed_outcome(trial: optuna.Trial, failure: TrialFailure) -> Outcome:
    """Record ``failure`` on ``trial`` (kind and reason) and fail it."""
    record_failure(trial, FailKind(failure.kind), failure.reason)
    return Outcome(TrialState.FAIL, None, f"failed ({failure.kind}): {failure.reason}")


class PerTrialObjective:
    """Every architecture trained from scratch in its own process (:func:`run_objective`): the per-trial search."""

    def __init__(self, space: SearchSpace, cfg: RunConfig):
        self.space, self.cfg = space, cfg

    def sample(self, trial: optuna.Trial) -> Architecture | Outcome:
        """Sample the trial's architecture and record it (:func:`sample_architecture`)."""
        return sample_architecture(trial, self.space)

    def evaluate(self, study: optuna.Study, trial: optuna.Trial, prefix: str = "",
                 arch: Architecture | None = None) -> Outcome:
        """Measure, maybe reject, train and record the trial (:func:`run_objective`)."""
        return run_objective(study, trial, self.space, self.cfg, prefix, arch)
