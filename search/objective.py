"""What the search does with one Optuna trial: sample, measure, maybe reject, train, record.

Latency is measured before training, on the untrained fused model at the deployment size.
An architecture over the latency budget, or breaking a constraint that is known before
training (params, GFLOPs, latency), is PRUNED with its reason and never trained. The same
architecture sampled twice reuses the earlier trial's outcome. Everything a trial knows is
written to its user attrs (``metrics`` holds the objective values by name).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space import SearchSpace
from search.study import worker_identity
from trainers.architecture import Architecture
from trainers.results import TrialFailure, TrialSettings

PRE_TRAINING_METRICS = ("params_m", "gflops", "latency_ms")


@dataclass(frozen=True)
class SearchSettings:
    """Everything a trial of this search needs besides its architecture."""

    space: SearchSpace
    trial: TrialSettings  # ``out`` is the study folder; each trial gets a sub-folder
    nc: int
    latency_budget_ms: float | None = None
    trial_timeout: float | None = None


@dataclass(frozen=True)
class Outcome:
    """How a trial ends: its state, values (COMPLETE only) and a one-line note for the log."""

    state: TrialState
    values: list[float] | None
    note: str


def versions() -> dict[str, str]:
    """Package versions recorded on every trial."""
    import torch
    import ultralytics

    return {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__,
            "optuna": optuna.__version__}


def architecture_of_trial(trial: optuna.Trial, space: SearchSpace) -> Architecture:
    """Sample the trial's architecture; the enqueued baseline trial is exactly the stock model."""
    arch = space.suggest(trial)
    return space.baseline() if trial.user_attrs.get("baseline") else arch


def earlier_trial(study: optuna.Study, arch_hash: str, number: int) -> FrozenTrial | None:
    """A finished trial of the same architecture (COMPLETE preferred), if any."""
    same = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                  TrialState.FAIL))
            if t.user_attrs.get("hash") == arch_hash and t.number != number and "reused_from" not in t.user_attrs
            and (t.state != TrialState.FAIL or t.user_attrs.get("fail_kind") not in (None, "worker_died"))]
    same.sort(key=lambda t: (t.state != TrialState.COMPLETE, t.number))
    return same[0] if same else None


def _set_constraints(trial: optuna.Trial, space: SearchSpace, metrics: dict[str, float]) -> bool:
    """Report every constraint whose metric is known; return whether all known ones hold."""
    ok = True
    for c in space.spec.constraints:
        if c.metric in metrics:
            v = c.violation(metrics[c.metric])
            trial.set_constraint(str(c), v)
            ok &= v <= 0
    return ok


def _reuse(trial: optuna.Trial, prev: FrozenTrial, space: SearchSpace) -> Outcome:
    for key, value in prev.user_attrs.items():
        if key not in ("host", "pid", "baseline", "retry_of"):
            trial.set_user_attr(key, value)
    trial.set_user_attr("reused_from", prev.number)
    if prev.user_attrs.get("metrics"):
        _set_constraints(trial, space, prev.user_attrs["metrics"])
    note = f"same architecture as trial {prev.number}: reused its result"
    return Outcome(prev.state, list(prev.values) if prev.state == TrialState.COMPLETE else None, note)


def _pre_training(trial: optuna.Trial, arch: Architecture, ctx: SearchSettings) -> dict[str, float]:
    from trainers.build import build_model
    from trainers.inference import count_params, gflops
    from trainers.latency import LatencyCache, measure_architecture_latency

    model = build_model(arch, nc=ctx.nc)
    s = ctx.trial
    cache = LatencyCache(s.latency_cache) if s.latency_cache else None
    report, cached = measure_architecture_latency(arch, s.latency_imgsz, s.latency_device, s.latency_dtype,
                                                  nc=ctx.nc, cache=cache)
    metrics = {"params_m": count_params(model) / 1e6, "gflops": gflops(model, s.latency_imgsz),
               "latency_ms": report.median_ms}
    trial.set_user_attr("params", count_params(model))
    trial.set_user_attr("gflops", round(metrics["gflops"], 4))
    trial.set_user_attr("latency", {**report.to_dict(), "cached": cached})
    return metrics


def sample_architecture(trial: optuna.Trial, ctx: SearchSettings) -> Architecture | Outcome:
    """Sample the trial's architecture and record it, or the failure to build one."""
    try:
        arch = architecture_of_trial(trial, ctx.space)
    except ValueError as e:
        return _fail(trial, TrialFailure("build", str(e)))
    trial.set_user_attr("hash", arch.hash)
    trial.set_user_attr("architecture", arch.to_dict())
    trial.set_user_attr("blocks", arch.blocks_summary())
    return arch


def run_objective(study: optuna.Study, trial: optuna.Trial, ctx: SearchSettings, prefix: str = "",
                  arch: Architecture | None = None) -> Outcome:
    """Do everything for one trial and return how it ends (the caller tells the study).

    ``arch``: already sampled (by a driver that asks in another process); else sampled here.
    """
    from search.runner import run_trial_process

    for key, value in {**worker_identity(), "versions": versions()}.items():
        trial.set_user_attr(key, value)
    if arch is None:
        sampled = sample_architecture(trial, ctx)
        if isinstance(sampled, Outcome):
            return sampled
        arch = sampled
    prev = earlier_trial(study, arch.hash, trial.number)
    if prev is not None:
        return _reuse(trial, prev, ctx.space)
    try:
        metrics = _pre_training(trial, arch, ctx)
    except Exception as e:  # an architecture that cannot be built or run is a failure of the architecture
        return _fail(trial, TrialFailure("build", f"{type(e).__name__}: {e}"[:500], arch.hash))
    if ctx.latency_budget_ms is not None and metrics["latency_ms"] > ctx.latency_budget_ms:
        reason = f"latency {metrics['latency_ms']:.2f} ms > budget {ctx.latency_budget_ms:g} ms: not trained"
        return _prune(trial, metrics, reason, ctx.space)
    if not _set_constraints(trial, ctx.space, metrics):
        broken = [str(c) for c in ctx.space.spec.constraints if c.metric in metrics
                  and c.violation(metrics[c.metric]) > 0]
        return _prune(trial, metrics, f"breaks {', '.join(broken)} before training: not trained", ctx.space,
                      constraints_set=True)
    settings = replace(ctx.trial, out=str(Path(ctx.trial.out) / f"trial_{trial.number:04d}_{arch.hash}"))
    result = run_trial_process(arch, settings, prefix=prefix, timeout=ctx.trial_timeout)
    if isinstance(result, TrialFailure):
        return _fail(trial, result)
    metrics.update(map50_95=result.map50_95, map50=result.map50)
    _set_constraints_after(trial, ctx.space, metrics)
    for key, value in {"metrics": metrics, "map50_95": result.map50_95, "epoch_map": list(result.epoch_map),
                       "weights": result.weights, "train_seconds": result.train_seconds, "device": result.device,
                       "epochs": result.epochs, "data": ctx.trial.data, "train_imgsz": ctx.trial.imgsz}.items():
        trial.set_user_attr(key, value)
    values = [metrics[m] for m, _ in ctx.space.spec.objectives]
    return Outcome(TrialState.COMPLETE, values, f"mAP50-95 {result.map50_95:.3f}, latency "
                   f"{metrics['latency_ms']:.2f} ms, trained in {result.train_seconds:.0f} s")


def _set_constraints_after(trial: optuna.Trial, space: SearchSpace, metrics: dict[str, float]) -> None:
    for c in space.spec.constraints:
        if c.metric not in PRE_TRAINING_METRICS:
            trial.set_constraint(str(c), c.violation(metrics[c.metric]))


def _prune(trial: optuna.Trial, metrics: dict[str, float], reason: str, space: SearchSpace,
           constraints_set: bool = False) -> Outcome:
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("prune_reason", reason)
    if not constraints_set:
        _set_constraints(trial, space, metrics)
    return Outcome(TrialState.PRUNED, None, f"pruned: {reason}")


def _fail(trial: optuna.Trial, failure: TrialFailure) -> Outcome:
    trial.set_user_attr("fail_kind", failure.kind)
    trial.set_user_attr("fail_reason", failure.reason)
    return Outcome(TrialState.FAIL, None, f"failed ({failure.kind}): {failure.reason}")


def describe(trial: Any) -> str:
    """Short label of a trial for progress lines."""
    return f"trial {trial.number} [{trial.user_attrs.get('hash', '?')}] {trial.user_attrs.get('blocks', '')}"
