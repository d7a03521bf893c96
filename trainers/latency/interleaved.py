"""Comparable latency figures for several models: round-robin bursts in one process, samples pooled per model.

On a shared CPU the drift between runs (minutes apart) is far larger than the spread within a
run (see ``PITFALLS.md``, "Measuring on a shared CPU"), and another job can halve the speed for
a second at a time. :func:`measure_interleaved` times every model in ``rounds`` rounds; each
round gives each model one short burst (``warmup`` untimed, ``repeats`` timed forwards) in an
order rotated by one each round, so no model always runs first or last. Short bursts and many
rounds spread every slow spell over all models alike. Each model's samples of all rounds are
pooled into one report: median, spread and the interval of the median come from the pooled
samples, ``n`` is their count, and every report carries the same ``measured_at``.

How a burst is timed (:class:`Bursts`):

- ``torch``: the deployed form is made once per model (``TorchBackend.prepare``) and timed
  burst after burst, by the same code as ``TorchBackend.measure``.
- ``onnxruntime`` / ``openvino``: exported (INT8: quantized) and opened once per model
  (``prepare``), then timed burst after burst by the same code as their ``measure``.
- any other backend (one without ``prepare``): one call of its public ``measure`` per burst.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from trainers.latency.backends import LatencyBackend, get_backend
from trainers.latency.report import SAMPLES_KEPT, LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.latency.timing import summarize

RoundDone = Callable[[int, int, list[LatencyReport]], None]
"""Called after each round with (round number from 1, rounds, the pooled reports so far in model order)."""

__all__ = ["Bursts", "RoundDone", "bursts_for", "measure_interleaved", "pool_reports", "round_order"]


class Bursts(Protocol):
    """One model, ready to be timed again and again in one setting."""

    def burst(self, warmup: int, repeats: int) -> LatencyReport:
        """Time one burst: ``warmup`` untimed then ``repeats`` timed forwards; its report keeps every sample."""


class _MeasureBursts:
    """Any backend: one ``backend.measure`` call per burst."""

    def __init__(self, backend: LatencyBackend, model: Any, setting: LatencySetting, fused: bool):
        self.backend, self.model, self.setting, self.fused = backend, model, setting, fused

    def burst(self, warmup: int, repeats: int) -> LatencyReport:
        """``backend.measure`` with exactly ``repeats`` timed forwards (no minimum duration)."""
        return self.backend.measure(self.model, self.setting, fused=self.fused, warmup=warmup, repeats=repeats,
                                    min_seconds=0.0)


def _backend_here(setting: LatencySetting) -> LatencyBackend:
    """The setting's backend; ``ValueError`` when it is unknown or cannot run here."""
    backend = get_backend(setting.backend)
    if (why := backend.unavailable(setting)) is not None:
        raise ValueError(f"latency backend {setting.backend!r} cannot run here: {why}")
    return backend


def bursts_for(model: Any, setting: LatencySetting, fused: bool = True) -> Bursts:
    """``model`` ready for bursts in ``setting``; ``ValueError`` when the backend cannot run here."""
    backend = _backend_here(setting)
    prepare = getattr(backend, "prepare", None)
    if prepare is not None:
        prepared: Any = prepare(model, setting, fused)
        prepared.burst(2, 1)  # the first forwards of a fresh model are slow: untimed
        return prepared  # type: ignore[no-any-return]
    return _MeasureBursts(backend, model, setting, fused)


def round_order(count: int, round_index: int) -> list[int]:
    """The model indices of round ``round_index`` (from 0): ``0..count-1`` rotated left by ``round_index``."""
    shift = round_index % count if count else 0
    return list(range(shift, count)) + list(range(shift))


def _evenly_kept(samples: Sequence[float], keep: int) -> tuple[float, ...]:
    """At most ``keep`` samples, spread evenly over ``samples`` (every round stays represented)."""
    if len(samples) <= keep:
        return tuple(samples)
    step = len(samples) / keep
    return tuple(samples[int(i * step)] for i in range(keep))


def pool_reports(reports: Sequence[LatencyReport], rounds: int, measured_at: str | None = None) -> LatencyReport:
    """One report from bursts of the same model and setting: statistics of all their samples pooled.

    Conditions (device, dtype, backend, head, ...) are the first burst's; ``measured_at`` is the
    one given, else the last burst's; ``mode`` says the figure is interleaved.
    """
    pooled = [s for r in reports for s in r.samples]
    if not pooled:
        raise ValueError("pool_reports needs reports that kept their samples, got none")
    first, stats = reports[0], summarize(pooled)
    return dataclasses.replace(first, median_ms=stats["median_ms"], p90_ms=stats["p90_ms"], mean_ms=stats["mean_ms"],
                               cv=stats["cv"], ci_low_ms=stats["ci_low_ms"], ci_high_ms=stats["ci_high_ms"],
                               n=len(pooled), mode=f"{first.mode} interleaved x{rounds}",
                               measured_at=measured_at or reports[-1].measured_at,
                               samples=_evenly_kept(pooled, SAMPLES_KEPT))


def measure_interleaved(models: Sequence[Any], setting: LatencySetting, rounds: int = 20, repeats: int = 3,
                        warmup: int = 1, fused: bool = True, on_round: RoundDone | None = None) -> list[LatencyReport]:
    """Measure ``models`` round-robin in ``setting``; one pooled report per model, in the order given.

    ``models``: training-form detectors (left untouched); ``rounds`` x ``repeats`` samples each.
    Every report carries the same ``measured_at``:
    when the last burst ended. ``ValueError`` when the backend cannot run here or an argument
    is out of range.
    """
    if rounds < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"rounds and repeats must be >= 1 and warmup >= 0, got {rounds}, {repeats}, {warmup}")
    _backend_here(setting)
    if not models:
        return []
    ready = [bursts_for(m, setting, fused) for m in models]
    bursts: list[list[LatencyReport]] = [[] for _ in ready]
    for r in range(rounds):
        for i in round_order(len(ready), r):
            bursts[i].append(ready[i].burst(warmup, repeats))
        if on_round is not None:
            on_round(r + 1, rounds, [pool_reports(b, r + 1) for b in bursts])
    finished = max(r.measured_at for b in bursts for r in b)  # one time stamp: the figures were taken together
    return [pool_reports(b, rounds, finished) for b in bursts]
