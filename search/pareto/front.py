"""The Pareto front of a study: feasible trials, one per architecture, none dominated; its hypervolume.

``latency`` (trial number -> :class:`~trainers.latency.report.LatencyReport`) replaces the
trials' own ``latency_ms`` where given: the figures of another target, or of the interleaved
re-measure that ends a search (see :mod:`search.study.targets`, :mod:`search.engine.interleaved`).

Noise-aware dominance (``noise=True``, the default). A latency figure is a median with a 95%
interval (:attr:`LatencyReport.interval`); a difference inside the noise is no difference.
When the intervals of two trials' latency overlap, their latencies count as equal, so the one
at least as good in every other objective dominates (higher mAP, or equal mAP: the one with
the lower median stays, the other is a duplicate within noise). Intervals that do not overlap
compare as usual, so a clearly faster, less accurate trial stays on the front. Where either
trial has no interval (reports written before intervals existed, or ``noise=False``), the
latencies compare exactly. The latency report of a trial is its ``latency`` record
(:mod:`search.study.records`), or the ``latency`` override.

"Equal within noise" is not transitive (A ~ B and B ~ C do not give A ~ C), so the front is
built best-first: trials ordered by their other objectives, then latency median, then number,
and a trial joins the front unless a point already on it dominates it. Every trial off the
front is then dominated by a front point, and no front point dominates another. With exact
comparisons this is the usual Pareto front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto.dominance import dominates
from search.space import Constraint
from search.study.records import read_record
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture

LATENCY_METRIC = "latency_ms"
MAP_METRIC, INT8_MAP_METRIC = "map50_95", "map50_95_int8"
Interval = tuple[float, float]


def accuracy_metric(objectives: Sequence[tuple[str, str]]) -> str:
    """The mAP the front is ranked on: ``map50_95_int8`` when it is an objective (an INT8 target), else ``map50_95``."""
    return INT8_MAP_METRIC if any(m == INT8_MAP_METRIC for m, _ in objectives) else MAP_METRIC


def is_feasible(t: FrozenTrial, constraints: Sequence[Constraint]) -> bool:
    """Whether every constraint holds for the trial's recorded metrics."""
    metrics = read_record(t, "metrics", {})
    return all(c.metric not in metrics or c.violation(metrics[c.metric]) <= 0 for c in constraints)


def _as_min(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions)]


def trial_metrics(t: FrozenTrial, latency: Mapping[int, LatencyReport] | None = None) -> dict[str, float]:
    """The trial's recorded metrics, ``latency_ms`` taken from ``latency`` when it has the trial."""
    metrics = dict(read_record(t, "metrics", {}))
    if latency is not None and t.number in latency:
        metrics[LATENCY_METRIC] = latency[t.number].median_ms
    return metrics


def blocks_label(t: FrozenTrial) -> str:
    """The trial's blocks with their widths and depths (``C3k2/RepViT x0.75 d2/...``), from its architecture record.

    Trials without a readable record show their ``blocks`` user attr (studies written before
    widths and depths were shown keep the block names there), else ``""``.
    """
    data = read_record(t, "architecture")
    if isinstance(data, dict):
        try:
            return Architecture.from_dict(data).blocks_summary()
        except (ValueError, TypeError, AttributeError):
            pass
    return str(t.user_attrs.get("blocks", ""))


def objective_values(t: FrozenTrial, objectives: Sequence[tuple[str, str]],
                     latency: Mapping[int, LatencyReport] | None = None) -> list[float]:
    """The trial's values of ``objectives`` (its Optuna values unless ``latency`` replaces one)."""
    if latency is None or t.number not in latency:
        return list(t.values)
    metrics = trial_metrics(t, latency)
    return [metrics[m] for m, _ in objectives]


def minimized_values(t: FrozenTrial, objectives: Sequence[tuple[str, str]],
                     latency: Mapping[int, LatencyReport] | None = None) -> list[float]:
    """:func:`objective_values` with the maximized ones negated, for :func:`~search.pareto.dominance.dominates`."""
    values = objective_values(t, objectives, latency)
    return [v if d == "minimize" else -v for v, (_, d) in zip(values, objectives)]


def latency_report(t: FrozenTrial, latency: Mapping[int, LatencyReport] | None = None) -> LatencyReport | None:
    """The report behind the trial's latency figure: ``latency``'s, else its own ``latency`` record, else None."""
    if latency is not None and t.number in latency:
        return latency[t.number]
    data = read_record(t, "latency")
    return LatencyReport.from_dict(data) if isinstance(data, dict) and "median_ms" in data else None


def latency_interval(t: FrozenTrial, latency: Mapping[int, LatencyReport] | None = None) -> Interval | None:
    """The 95% interval (ms) of the trial's latency median, or ``None`` when its report has none."""
    report = latency_report(t, latency)
    if report is None or report.ci_low_ms is None or report.ci_high_ms is None:
        return None
    return report.ci_low_ms, report.ci_high_ms


def intervals_overlap(a: Interval | None, b: Interval | None) -> bool:
    """Whether two latency intervals overlap (a missing interval overlaps nothing: compare exactly)."""
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


@dataclass(frozen=True)
class _Point:
    """A candidate: its objective values as minimized, and its latency interval (``None``: exact)."""

    trial: FrozenTrial
    values: tuple[float, ...]
    interval: Interval | None


def _dominates(a: _Point, b: _Point, lat: int | None) -> bool:
    """``a`` dominates ``b``; latencies whose intervals overlap count as equal (:func:`dominates` with a tie)."""
    tie = lat is not None and intervals_overlap(a.interval, b.interval)
    return dominates(a.values, b.values, tied=lat if tie else None)


def _candidates(study: optuna.Study, constraints: Sequence[Constraint]) -> list[FrozenTrial]:
    """Feasible COMPLETE trials, the first of each architecture hash."""
    seen: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = t.user_attrs.get("hash", str(t.number))
        if is_feasible(t, constraints) and key not in seen:
            seen[key] = t
    return list(seen.values())


def pareto_front(study: optuna.Study, objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint] = (),
                 latency: Mapping[int, LatencyReport] | None = None, noise: bool = True) -> list[FrozenTrial]:
    """Feasible COMPLETE trials not dominated, one per architecture hash, sorted by the last objective.

    ``noise``: latencies within each other's interval are equal (see the module docstring);
    ``False``: exact comparison of the medians.
    """
    directions = [d for _, d in objectives]
    lat = next((i for i, o in enumerate(objectives) if o == (LATENCY_METRIC, "minimize")), None)
    points = [_Point(t, tuple(_as_min(objective_values(t, objectives, latency), directions)),
                     latency_interval(t, latency) if noise and lat is not None else None)
              for t in _candidates(study, constraints)]

    def order(p: _Point) -> tuple[Any, ...]:
        others = [v for i, v in enumerate(p.values) if i != lat]
        return (*others, p.values[lat] if lat is not None else 0.0, p.trial.number)

    front: list[_Point] = []
    for p in sorted(points, key=order):
        if not any(_dominates(f, p, lat) for f in front):
            front.append(p)
    front.sort(key=lambda p: (p.values[-1] * (1 if directions[-1] == "minimize" else -1), p.trial.number))
    return [p.trial for p in front]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The COMPLETE trial of the stock model (enqueued as trial 0), if it finished."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("baseline") or t.user_attrs.get("is_baseline"):
            return t
    return None


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``(map, latency)`` points (mAP maximized, latency minimized) up to ``ref``."""
    pts = sorted((lat, m) for m, lat in points if m > ref[0] and lat < ref[1])
    area, best_map = 0.0, ref[0]
    for i, (lat, m) in enumerate(pts):
        best_map = max(best_map, m)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (nxt - lat) * (best_map - ref[0])
    return area


def front_hypervolume(front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
                      latency: Mapping[int, LatencyReport] | None = None,
                      map_metric: str = MAP_METRIC) -> dict[str, Any] | None:
    """Hypervolume in (``map_metric``, latency ms) against mAP 0 and 2x the baseline's latency median.

    ``map_metric``: the mAP the front is ranked on (:func:`accuracy_metric`; ``map50_95_int8`` for an INT8
    objective), named in the result as ``map_metric`` and in ``reference``.
    ``hypervolume_low``/``hypervolume_high``: the same with every front point at the high end
    and at the low end of its latency interval (its median where it has none), the reference
    fixed: the hypervolume's spread within latency noise (low <= hypervolume <= high).
    """
    if baseline is None or not front or LATENCY_METRIC not in trial_metrics(baseline, latency):
        return None
    ref = (0.0, 2.0 * trial_metrics(baseline, latency)[LATENCY_METRIC])
    maps, medians, lows, highs = [], [], [], []
    for t in front:
        m = trial_metrics(t, latency)
        lo, hi = latency_interval(t, latency) or (m[LATENCY_METRIC], m[LATENCY_METRIC])
        maps.append(m[map_metric])
        medians.append(m[LATENCY_METRIC])
        lows.append(min(lo, m[LATENCY_METRIC]))
        highs.append(max(hi, m[LATENCY_METRIC]))
    return {"hypervolume": hypervolume_2d(list(zip(maps, medians)), ref),
            "hypervolume_low": hypervolume_2d(list(zip(maps, highs)), ref),
            "hypervolume_high": hypervolume_2d(list(zip(maps, lows)), ref),
            "map_metric": map_metric, "reference": {map_metric: ref[0], "latency_ms": ref[1]}}
