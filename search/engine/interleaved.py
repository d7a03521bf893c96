"""The interleaved re-measure that ends a search: the front's candidates measured together, comparably.

Each trial's latency was measured when the trial ran; on a shared CPU figures minutes apart
differ by more than their own spread (``PITFALLS.md``, "Measuring on a shared CPU"). Before
the final report, :func:`remeasure_front` measures the stock baseline and every front
candidate round-robin in one process (:func:`trainers.latency.interleaved.measure_interleaved`)
in the study's latency setting, then:

- records the figures on the study under their target (``latency@<target>``,
  :func:`search.study.targets.write_target`), for every COMPLETE trial of each measured architecture;
- refreshes those architectures' entries in the latency cache, so the next study on this
  machine starts from these figures rather than a stale first one;
- returns them, for the report to rank the front on (the trials' own figures stay untouched).

Candidates (:func:`remeasure_candidates`): the baseline, the noise-aware front, and every
other feasible trial whose latency interval overlaps a front point's (a better figure could
put it on the front); one trial per architecture, at most :data:`MAX_CANDIDATES` (a one-shot
study scores hundreds of architectures and most sit within noise of some front point: then the
front comes first, spread evenly along it if it is longer, and of the rest those the fewest
trials dominate). They are chosen on the trials' own figures,
then again on the new ones: when the new figures bring a trial not measured yet onto the front
or into its noise (its own, older figure now looks fast), the whole set is measured again with
it, so the figures that rank the front always come from one interleaved run (at most
:data:`MAX_PASSES` runs). Fewer than two candidates: nothing to compare, nothing measured. A
resumed, finished study whose last interleaved run still covers every candidate reuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto.dominance import dominates
from search.pareto.front import (
    baseline_trial,
    intervals_overlap,
    is_feasible,
    latency_interval,
    latency_report,
    minimized_values,
    pareto_front,
)
from search.pareto.presets import preset_trials
from search.space import Constraint
from search.study.config import RunConfig
from search.study.records import read_record
from search.study.targets import TARGET_PREFIX, target_of, write_target
from trainers.cli import log
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.train.results import TrialSettings

REMEASURE_ROUNDS = 20  # short bursts, many rounds: 60 samples per model, a slow spell spread over all of them
REMEASURE_REPEATS = 3
REMEASURE_WARMUP = 1
MAX_PASSES = 3  # interleaved runs at most: the candidate set grows only when new figures call for it
MAX_CANDIDATES = 16  # a one-shot study of hundreds of trials has most of them within noise of its front


def latency_setting(settings: TrialSettings) -> LatencySetting:
    """The latency setting every trial of a study is measured in (batch 1, as the trials are)."""
    return settings.latency


def _key(t: FrozenTrial) -> str:
    return str(t.user_attrs.get("hash", t.number))


def remeasure_candidates(study: optuna.Study, objectives: Sequence[tuple[str, str]],
                         constraints: Sequence[Constraint] = (),
                         latency: Mapping[int, LatencyReport] | None = None,
                         limit: int | None = MAX_CANDIDATES) -> list[FrozenTrial]:
    """The baseline, the front and the feasible trials within latency noise of a front point; one per architecture.

    ``latency``: figures replacing the trials' own (as in :func:`search.pareto.pareto_front`).
    Also every preset trial (``--include-presets``: where each design reference lands is read on these figures).
    ``limit``: at most this many (``None``: all): the baseline, the front (spread evenly along it when it
    alone is longer), the presets, then the trials within noise that the fewest trials dominate.
    """
    front = pareto_front(study, objectives, constraints, latency)
    front_intervals = [latency_interval(t, latency) for t in front]
    base = baseline_trial(study)
    chosen: dict[str, FrozenTrial] = {_key(base): base} if base is not None else {}
    for t in front:
        chosen.setdefault(_key(t), t)
    presets = [t for t in preset_trials(study) if _key(t) not in chosen]  # feasible or not: the report places them
    taken = set(chosen) | {_key(t) for t in presets}
    near: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if _key(t) not in taken and is_feasible(t, constraints) and any(
                intervals_overlap(latency_interval(t, latency), i) for i in front_intervals):
            near.setdefault(_key(t), t)
    kept = list(chosen.values()) + presets + _least_dominated(list(near.values()), objectives, latency)
    if limit is not None and len(kept) > limit:
        kept = _thin(kept, len(chosen), limit, base is not None)
    return [t for t in kept if read_record(t, "architecture") is not None]


def _least_dominated(trials: list[FrozenTrial], objectives: Sequence[tuple[str, str]],
                     latency: Mapping[int, LatencyReport] | None) -> list[FrozenTrial]:
    """``trials`` ordered by how many of them dominate each (fewest first), then by trial number."""
    values = [minimized_values(t, objectives, latency) for t in trials]
    beaten = [sum(dominates(v, w) for v in values) for w in values]
    return [t for _, t in sorted(zip(beaten, trials), key=lambda p: (p[0], p[1].number))]


def _thin(kept: list[FrozenTrial], front_end: int, limit: int, has_base: bool) -> list[FrozenTrial]:
    """The first ``limit`` of ``kept`` (baseline, front, then the rest), the front spread evenly if it is longer."""
    head = 1 if has_base else 0
    front = kept[head:front_end]
    room = limit - head
    if len(front) > room:  # evenly along the front (sorted by its last objective), both ends kept
        step = (len(front) - 1) / max(room - 1, 1)
        front = [front[round(i * step)] for i in range(room)]
    return (kept[:head] + front + kept[front_end:])[:limit]


def _same_architecture(study: optuna.Study, by_hash: Mapping[str, LatencyReport]) -> dict[int, LatencyReport]:
    """Every COMPLETE trial of a measured architecture -> that architecture's figure."""
    return {t.number: by_hash[t.user_attrs["hash"]]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("hash") in by_hash}


def own_target(trials: Sequence[FrozenTrial]) -> str | None:
    """The target the trials' own latency figures were measured for (the first with a report)."""
    return next((target_of(r) for t in trials if (r := latency_report(t)) is not None), None)


def last_remeasure(study: optuna.Study, target: str) -> dict[int, LatencyReport]:
    """The figures of the latest interleaved run recorded under ``target`` (one ``measured_at``), by trial number."""
    recorded = study.user_attrs.get(TARGET_PREFIX + target, {})
    reports = {int(n): r for n, d in recorded.items() if "interleaved" in (r := LatencyReport.from_dict(d)).mode}
    latest = max((r.measured_at for r in reports.values()), default=None)
    return {n: r for n, r in reports.items() if r.measured_at == latest}


def _uncovered(study: optuna.Study, cfg: RunConfig, figures: Mapping[int, LatencyReport]) -> list[FrozenTrial]:
    """The candidates on ``figures`` that have none of them (to measure with the others)."""
    return [t for t in remeasure_candidates(study, cfg.objectives, cfg.constraints, figures) if t.number not in figures]


def refresh_cache(path: str, setting: LatencySetting, by_hash: Mapping[str, LatencyReport]) -> None:
    """Overwrite the latency cache entries of these architectures (hash -> report) in ``setting``."""
    from trainers.latency.measure import LatencyCache, cache_key

    cache = LatencyCache(path)
    for arch_hash, report in by_hash.items():
        cache.put(cache_key(setting, arch_hash), report)


def _measure(candidates: Sequence[FrozenTrial], settings: TrialSettings, rounds: int,
             repeats: int) -> list[LatencyReport]:
    """Build every candidate's architecture untrained and measure them interleaved, one log line per round."""
    from trainers.latency.interleaved import measure_interleaved
    from trainers.model.architecture import Architecture
    from trainers.model.build import build_model

    assert settings.nc is not None
    models = [build_model(Architecture.from_dict(read_record(t, "architecture")), nc=settings.nc)
              for t in candidates]

    def on_round(k: int, total: int, reports: list[LatencyReport]) -> None:
        figures = ", ".join(f"trial {t.number} {r.median_ms:.2f}" for t, r in zip(candidates, reports))
        log(f"latency re-measure round {k}/{total}: {figures} ms")

    return measure_interleaved(models, latency_setting(settings), rounds=rounds, repeats=repeats,
                               warmup=REMEASURE_WARMUP, on_round=on_round)


def remeasure_front(study: optuna.Study, cfg: RunConfig, rounds: int = REMEASURE_ROUNDS,
                    repeats: int = REMEASURE_REPEATS, reuse: bool = False) -> dict[int, LatencyReport]:
    """Re-measure the front's candidates interleaved; record, cache and return the figures by trial number.

    Figures recorded before that cover every candidate are returned as they are when nothing new would join
    the front on them, or whatever would with ``reuse`` (the figures a report already ranked on: the one-shot
    retraining after the search's own report, which would otherwise measure all :data:`MAX_PASSES` again).

    Returns ``{}`` (the front is then ranked on the trials' own figures) when there are fewer
    than two candidates, when the class count is unknown, when measuring fails (logged), or
    when this machine's target is not the one the trials were measured for (figures recorded only).
    """
    candidates = remeasure_candidates(study, cfg.objectives, cfg.constraints)
    target = own_target(candidates)
    if len(candidates) < 2 or cfg.trial.nc is None:
        if len(candidates) == 1:
            log(f"latency: trial {candidates[0].number} is the only front candidate, nothing to re-measure against")
        return {}
    earlier = last_remeasure(study, target) if target else {}
    if earlier and all(t.number in earlier for t in candidates) and (reuse or not _uncovered(study, cfg, earlier)):
        log(f"latency: the front's candidates were re-measured together before ({len(earlier)} trials): "
            "using those figures")
        return earlier
    try:
        by_hash = _measure_until_settled(study, cfg, candidates, rounds, repeats)
    except Exception as e:  # a backend that cannot run here, a model that cannot be built: report without it
        log(f"latency re-measure failed ({type(e).__name__}: {e}); the front is ranked on the trials' own figures")
        return {}
    figures = _same_architecture(study, by_hash)
    measured = target_of(next(iter(by_hash.values())))
    write_target(study, measured, figures)
    if cfg.trial.latency_cache:
        refresh_cache(cfg.trial.latency_cache, latency_setting(cfg.trial), by_hash)
    if target is not None and measured != target:
        log(f"latency re-measured for {measured}, the trials for {target}: figures recorded on the study, "
            "the front is ranked on the trials' own figures")
        return {}
    return figures


def _measure_until_settled(study: optuna.Study, cfg: RunConfig, candidates: list[FrozenTrial], rounds: int,
                           repeats: int) -> dict[str, LatencyReport]:
    """Measure ``candidates`` together, again with any trial the new figures make a candidate (bounded).

    Returns the last run's figures by architecture hash.
    """
    for attempt in range(1, MAX_PASSES + 1):
        setting = latency_setting(cfg.trial)
        log(f"latency re-measure of trials {[t.number for t in candidates]} interleaved: {rounds} rounds x "
            f"{repeats} forwards each, {setting.backend} {setting.imgsz} px on {setting.device}, "
            f"{setting.threads} thread(s)")
        reports = _measure(candidates, cfg.trial, rounds, repeats)
        by_hash = {t.user_attrs["hash"]: r for t, r in zip(candidates, reports)}
        joining = _uncovered(study, cfg, _same_architecture(study, by_hash))
        if not joining:
            break
        numbers = [t.number for t in joining]
        if attempt == MAX_PASSES:
            log(f"on the new figures trials {numbers} are front candidates too; after {MAX_PASSES} runs they keep "
                "their own figures")
            break
        log(f"on the new figures trials {numbers} are front candidates too: measuring again with them")
        candidates = candidates + joining
    return by_hash
