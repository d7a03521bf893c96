"""Multi-objective successive halving (asynchronous, ASHA style): at each rung, only the top 1/eta go on.

Rungs are epochs (``train.rungs`` in the space, following the schedule: :func:`schedule_rungs`;
``--rungs 3,6`` on ``search.run``, absolute epochs; increasing,
below the trial's epochs) and ``eta`` (``train.eta`` / ``--eta``, at least 2) is the reduction
factor. A training trial streams its per-epoch mAP (:class:`~trainers.train.results.EpochProgress`);
:class:`RungWatcher` records it on the trial as it comes (records ``epoch_map`` and
``epoch_map50``, :mod:`search.study.records`; on the CPU also user attr ``epoch_threads``), so every
worker, a thread of this driver or a process sharing the storage, reads the others' values from
the study. Optuna's ``Trial.report``/``should_prune`` raise in multi-objective studies, so nothing
goes through them.

When a trial ends epoch ``r`` of the rungs, it is compared with every trial that reached ``r``:
finished ones (COMPLETE, or PRUNED after training at least ``r`` epochs) and running ones, one
per architecture hash. Each is a point of the study's objectives in which mAP50-95 (and mAP50; an INT8
objective, ``map50_95_int8``, on the float mAP50-95: it is known only after training) is the value at
epoch ``r`` and latency (and params, GFLOPs: all known before training) is the
recorded figure (record ``metrics``). Latencies compare exactly here: a rung only decides
which trials train on, the final front is built noise-aware.

The rule (:func:`decide`). With ``n`` points at the rung, the trial included:

- ``n < eta``: it goes on. A rung is never waited for.
- Otherwise the points are ordered by non-dominated sorting (front 1 first); within a front by
  crowding distance, largest first (NSGA-II's: the ends of a front, the fastest and the most
  accurate, have an infinite distance, then points in the sparsest stretches of the front; it
  needs no reference point, unlike a hypervolume contribution); then by trial number. The trial
  goes on when its position is within the first ``max(n // eta, size of front 1)``, and is
  stopped otherwise: a trial no other trial at the rung dominates always goes on. With the
  handful of trials a small study has at a rung, ``n // eta`` alone stops points of the rung's
  own front (measured: in 3 studies of 6-epoch trials with rungs at 2 and 4, 5 of the 14 trials
  stopped at epoch 4 were non-dominated there, a 99 ms trial with mAP 0.122 among them, while the
  stock model at 149 ms had 0.009); only dominated trials beyond the top ``n // eta`` are losers.
- No accuracy signal yet: when the accuracy objectives at the rung (mAP50-95 at that epoch)
  span less than ``train.rung_min_signal`` (default :data:`MIN_SIGNAL`, 0.01) over the points
  there, everyone goes on. Early in training
  every model sits near mAP 0, and sorting such points ranks them on latency and noise alone,
  which stops every slower architecture whatever it would learn (measured: at epoch 2 of 6 on the
  synthetic set, 10 of 13 trials were stopped with mAP 0.000-0.006). The rung decides once mAP
  separates the trials.
- The baseline (user attr ``baseline``) is never stopped; its decision is still recorded.

A stopped trial is killed and recorded PRUNED, with ``prune_reason`` naming the rung, its rank
and the trials that dominate it, the records ``stopped_at`` (the decision) and its ``epoch_map``
so far. Every decision is kept in the trial's record ``rungs``. A trial writes its own value before it
reads the others', so of two trials reaching a rung at once the later one sees the earlier,
and a decision is a pure function of the stored values: every worker reading the same study
decides the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto.dominance import dominates, non_dominated_fronts
from search.study.config import RunConfig
from search.study.records import read_record, write_record
from trainers.cli import log
from trainers.train.results import EpochProgress

# accuracy objective -> its per-epoch record. An INT8 model's mAP exists only once the trained model is quantized,
# so at a rung ``map50_95_int8`` is judged on the float mAP50-95 of that epoch (measured mean drops: at most 1.75
# points, README "Does a block family survive PTQ?"); without it an INT8 search never stopped a trial at a rung.
CURVES = {"map50_95": "epoch_map", "map50_95_int8": "epoch_map", "map50": "epoch_map50"}
MIN_SIGNAL = 0.01  # mAP spread at a rung below which it carries no accuracy signal: nobody is stopped there
AT_A_RUNG = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def parse_rungs(text: str) -> tuple[int, ...]:
    """Rungs from ``"3,6"`` (``""``: none); ``ValueError`` unless increasing positive integers."""
    if not text.strip():
        return ()
    try:
        rungs = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"must be comma-separated epochs like 3,6 (or '' for none), got {text!r}") from None
    check_rungs(rungs)
    return rungs


def check_rungs(rungs: Sequence[int], epochs: int | None = None) -> None:
    """``ValueError`` unless ``rungs`` are increasing positive integers (below ``epochs`` when given)."""
    if any(r < 1 for r in rungs) or any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise ValueError(f"must be increasing positive epochs, got {list(rungs)}")
    if epochs is not None and rungs and rungs[-1] >= epochs:
        raise ValueError(f"must be below the trial's {epochs} epochs, got {list(rungs)}")


def schedule_rungs(rungs: Sequence[float], schedule: int, epochs: int) -> tuple[int, ...]:
    """The space's ``train.rungs`` as epochs of a trial of ``epochs`` epochs.

    Fractions in (0, 1) are fractions of ``epochs``; integers are epochs of the space's own
    ``schedule`` (``train.epochs``), kept as they are at that schedule and scaled by
    ``epochs / schedule`` when ``--epochs`` changes it. Each is rounded to the nearest epoch;
    rungs that collapse onto one another, fall below epoch 1 or reach the last epoch are dropped
    (at 5 epochs ``[0.25, 0.5]`` is ``(1, 2)``; at 2 epochs ``(1,)``; at 1 epoch none).
    A space whose integer rungs do not fit its own schedule is left for :func:`check_rungs` to refuse.
    """
    if all(isinstance(r, int) for r in rungs) and epochs == schedule:
        return tuple(int(r) for r in rungs)
    scale = epochs if any(isinstance(r, float) for r in rungs) else epochs / schedule
    placed = (math.floor(r * scale + 0.5) for r in rungs)
    return tuple(sorted({r for r in placed if 1 <= r < epochs}))


def crowding_distances(values: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point of one front: ends infinite, others the normalized cuboid."""
    n = len(values)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for k in range(len(values[0])):
        order = sorted(range(n), key=lambda i: values[i][k])
        lo, hi = values[order[0]][k], values[order[-1]][k]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi > lo:
            for prev, i, nxt in zip(order, order[1:], order[2:]):
                dist[i] += (values[nxt][k] - values[prev][k]) / (hi - lo)
    return dist


@dataclass(frozen=True)
class RungPoint:
    """A trial at a rung: its number and its objective values there, all minimized."""

    number: int
    values: tuple[float, ...]


def rung_order(points: Sequence[RungPoint]) -> list[tuple[RungPoint, int]]:
    """Points best first, each with its front (1-based): fronts, then crowding distance, then trial number."""
    ordered: list[tuple[RungPoint, int]] = []
    for f, front in enumerate(non_dominated_fronts([p.values for p in points]), start=1):
        crowd = crowding_distances([points[i].values for i in front])
        ranked = sorted(zip(front, crowd), key=lambda ic: (-ic[1], points[ic[0]].number))
        ordered.extend((points[i], f) for i, _ in ranked)
    return ordered


@dataclass(frozen=True)
class RungDecision:
    """Whether trial ``number`` goes on at rung ``epoch``: its position among the ``of`` trials there, and why."""

    epoch: int
    number: int
    position: int
    of: int
    keep: int
    eta: int
    front: int
    dominated_by: tuple[int, ...]
    go_on: bool
    spread: float | None = None  # the accuracy objectives' widest spread at the rung (None: no accuracy objective)
    min_signal: float = MIN_SIGNAL

    @property
    def signal(self) -> bool:
        """Whether accuracy at this rung separates the trials enough to decide on (spread >= ``min_signal``)."""
        return self.spread is None or self.spread >= self.min_signal

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the ``rungs`` and ``stopped_at`` records)."""
        return {**asdict(self), "dominated_by": list(self.dominated_by)}

    def reason(self, epochs: int) -> str:
        """One line: the rung, the rank, the rule and the trials that dominate this one."""
        where = f"rung {self.epoch} (epoch {self.epoch} of {epochs})"
        if self.of < self.eta:
            return f"{where}: {self.of} trial(s) there, fewer than eta {self.eta}"
        if not self.signal:
            return (f"{where}: no accuracy signal yet (mAP spans {self.spread:.4f} < {self.min_signal:g} over "
                    f"{self.of} trials)")
        rule = (f"1/eta, eta {self.eta}" if self.keep == self.of // self.eta else
                f"the whole first front; 1/eta, eta {self.eta}, keeps {self.of // self.eta}")
        rank = f"rank {self.position} of {self.of}, top {self.keep} ({rule}) go on"
        by = f"dominated by trials {list(self.dominated_by)}" if self.dominated_by else "dominated by no trial"
        return f"{where}: {rank}; front {self.front}, {by}"


def decide(points: Sequence[RungPoint], number: int, eta: int, epoch: int,
           accuracy: Sequence[int] = (), min_signal: float = MIN_SIGNAL) -> RungDecision:
    """The decision for trial ``number`` (one of ``points``) at rung ``epoch``: see the module docstring.

    ``accuracy``: the indices of the accuracy objectives in the points' values (their spread is the signal).
    """
    me = next(p for p in points if p.number == number)
    spread = max((max(p.values[i] for p in points) - min(p.values[i] for p in points) for i in accuracy),
                 default=None)
    dominated_by = tuple(sorted(p.number for p in points if dominates(p.values, me.values)))
    order = rung_order(points)
    position = next(i for i, (p, _) in enumerate(order, start=1) if p.number == number)
    front = order[position - 1][1]
    n = len(points)
    first_front = sum(1 for _, f in order if f == 1)
    keep = n if n < eta or (spread is not None and spread < min_signal) else max(n // eta, first_front)
    return RungDecision(epoch, number, position, n, keep, eta, front, dominated_by, position <= keep, spread,
                        min_signal)


def point_at(t: FrozenTrial, objectives: Sequence[tuple[str, str]], epoch: int) -> RungPoint | None:
    """Trial ``t`` at rung ``epoch`` (its accuracy at that epoch, its other figures), or ``None`` if it lacks one."""
    values = []
    metrics = read_record(t, "metrics") or {}
    for metric, direction in objectives:
        if metric in CURVES:
            curve = read_record(t, CURVES[metric]) or []
            value = curve[epoch - 1] if len(curve) >= epoch else None
        else:
            value = metrics.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        values.append(float(value) if direction == "minimize" else -float(value))
    return RungPoint(t.number, tuple(values))


def rung_points(trials: Sequence[FrozenTrial], objectives: Sequence[tuple[str, str]], epoch: int,
                number: int) -> list[RungPoint]:
    """The points at rung ``epoch``: trials that reached it, one per architecture (trial ``number`` for its own)."""
    by_arch: dict[str, RungPoint] = {}
    for t in sorted(trials, key=lambda t: (t.number != number, t.number)):
        if t.state not in AT_A_RUNG or (t.number != number and "reused_from" in t.user_attrs):
            continue
        point = point_at(t, objectives, epoch)
        key = str(t.user_attrs.get("hash") or f"#{t.number}")
        if point is not None and key not in by_arch:
            by_arch[key] = point
    return list(by_arch.values())


def rung_decision(study: optuna.Study, number: int, objectives: Sequence[tuple[str, str]], epoch: int,
                  eta: int, min_signal: float = MIN_SIGNAL) -> RungDecision | None:
    """The decision for trial ``number`` at rung ``epoch`` from the study's stored values (``None``: no value)."""
    points = rung_points(study.get_trials(deepcopy=False, states=AT_A_RUNG), objectives, epoch, number)
    if not any(p.number == number for p in points):
        return None
    return decide(points, number, eta, epoch, [i for i, (m, _) in enumerate(objectives) if m in CURVES], min_signal)


class RungWatcher:
    """A training trial's ``on_epoch``: records each epoch's mAP on the trial; at a rung, decides whether it stops.

    ``stopped``: the decision that stopped the trial, if one did.
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial, cfg: RunConfig, prefix: str = ""):
        self.study, self.trial, self.cfg, self.prefix = study, trial, cfg, prefix
        self.curves: dict[str, list[float]] = {attr: [] for attr in CURVES.values()}
        self.threads: list[int] = []  # torch threads each epoch ended on (CPU only)
        self.decisions: list[dict[str, Any]] = []
        self.stopped: RungDecision | None = None
        self.baseline = bool(trial.user_attrs.get("baseline"))

    def on_epoch(self, progress: EpochProgress) -> bool:
        """Record the epoch; ``True`` when the trial must stop here."""
        self.curves["epoch_map"].append(round(progress.map50_95, 5))
        self.curves["epoch_map50"].append(round(progress.map50, 5))
        for key, curve in self.curves.items():  # written before any rung reads the study: see the module docstring
            write_record(self.trial, key, list(curve))
        if progress.threads:  # kept on a trial a rung stops too; a finished trial's result writes the same list
            self.threads.append(progress.threads)
            self.trial.set_user_attr("epoch_threads", list(self.threads))
        if progress.epoch not in self.cfg.rungs:
            return False
        decision = rung_decision(self.study, self.trial.number, self.cfg.objectives, progress.epoch, self.cfg.eta,
                                 self.cfg.rung_min_signal)
        if decision is None:
            return False
        self.decisions.append(decision.to_dict())
        write_record(self.trial, "rungs", self.decisions)
        if not decision.go_on and not self.baseline:
            self.stopped = decision  # the caller records and logs it when the process is gone
            return True
        verdict = "goes on" if decision.go_on else "goes on (the baseline is never stopped)"
        log(f"{self.prefix}trial {self.trial.number} {verdict} at {decision.reason(self.cfg.trial.epochs)}")
        return False


def rung_summary(study: optuna.Study) -> str:
    """One line for the report: trials stopped at each rung and epochs trained in all ('' when no rung decided)."""
    trials = study.get_trials(deepcopy=False)
    if not any(read_record(t, "rungs") for t in trials):
        return ""
    at: dict[int, int] = {}
    for t in trials:
        if "reused_from" not in t.user_attrs and isinstance(stop := read_record(t, "stopped_at"), dict):
            at[stop["epoch"]] = at.get(stop["epoch"], 0) + 1
    epochs = sum(len(read_record(t, "epoch_map", [])) for t in trials if "reused_from" not in t.user_attrs)
    where = ", ".join(f"{n} at epoch {e}" for e, n in sorted(at.items())) or "none"
    return f"Successive halving: {sum(at.values())} trial(s) stopped at a rung ({where}); {epochs} epochs trained"
