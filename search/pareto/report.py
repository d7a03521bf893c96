"""The Pareto front as people read it: rows with deltas against the stock baseline, a table, JSON, plots.

Supernet estimates (trials with user attr ``source: supernet``) are labelled as such, with the
stand-alone mAP of the retrained beside them and their ranking (:mod:`.standalone`).

``pareto.txt`` and ``pareto.json`` start with the report's header (:mod:`.header`); the plots are
drawn by :mod:`.plot`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search.pareto.front import (
    MAP_METRIC,
    accuracy_metric,
    baseline_trial,
    blocks_label,
    front_hypervolume,
    intervals_overlap,
    latency_interval,
    pareto_front,
    trial_metrics,
)
from search.pareto.header import ReportHeader, report_header
from search.pareto.plot import plot_data, write_plots
from search.pareto.presets import format_presets, preset_rows
from search.pareto.standalone import SUPERNET, format_standalone, standalone_map, standalone_rows
from search.study.config import RunConfig
from trainers.latency.report import LatencyReport

SPREAD_ATTR = "map_seed_spread"  # study user attr written by search.audit: mAP50-95's seed-to-seed spread


def map_seed_spread(study: optuna.Study) -> float | None:
    """The seed-to-seed spread of mAP50-95 at the study's schedule, as ``search.audit`` measured it.

    The study's ``map_seed_spread`` attr, else (audits before it existed) the ``audit`` record's
    ``map_noise``; ``None`` when no audit measured it, or when the audit was of a one-shot study (its spread is
    of stand-alone trainings, the table's figures are supernet estimates).
    """
    attrs = study.user_attrs
    spread = (attrs.get(SPREAD_ATTR) or {}).get("map50_95")
    if spread is not None:
        return spread
    audit = attrs.get("audit") or {}
    return None if audit.get("search_source") == SUPERNET else audit.get("map_noise")


def _versus(delta: float, tie: bool) -> int:
    """+1 better, 0 a tie (within noise), -1 worse; ``delta`` oriented so that positive is better."""
    return 0 if tie or delta == 0 else (1 if delta > 0 else -1)


def _interval(v: Sequence[float] | None) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if v else None


def beats_stock(d_map: float, map_noise: float | None, lat: float, base_lat: float,
                ci: Sequence[float] | None, base_ci: Sequence[float] | None) -> bool | None:
    """Whether a point beats the stock model beyond the noise: worse in neither objective, better in one.

    An mAP difference within ``map_noise`` (the seed spread) and latencies whose 95% intervals
    overlap are ties, as on the front itself; ``None`` when the seed spread is unknown (no mAP
    difference can be called a win then).
    """
    if map_noise is None or math.isnan(d_map) or math.isnan(lat):
        return None
    acc = _versus(d_map, abs(d_map) <= map_noise)
    speed = _versus(base_lat - lat, intervals_overlap(_interval(ci), _interval(base_ci)))
    return min(acc, speed) >= 0 and max(acc, speed) > 0


def front_rows(front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
               latency: Mapping[int, LatencyReport] | None = None,
               map_noise: float | None = None, alone: Mapping[int, float] | None = None,
               map_metric: str = MAP_METRIC) -> list[dict[str, Any]]:
    """One dict per front point: trial, hash, mAP, latency and its interval, params, blocks, deltas vs the baseline.

    ``latency_ci``: the 95% interval of the latency median (``None`` when its report has none);
    ``within_noise``: whether it overlaps the interval of a neighbouring row (the row before or
    after in ``front``'s order), i.e. their latency difference is noise. ``map_noise``: the
    seed spread of mAP50-95 (:func:`map_seed_spread`), kept as ``map_spread``;
    ``map_within_noise``: whether its mAP differs from a neighbour's by less than it, i.e. the two
    are tied on accuracy; ``d_map_within_noise``: whether its mAP is within it of the baseline's;
    ``beats_stock``: :func:`beats_stock` (``None``: spread unknown). ``source``: ``supernet`` when the mAP is a
    supernet estimate (trial user attr ``source``), else ``trained``; ``map50_95_alone``: the stand-alone mAP
    of a retrained trial (``alone``, :func:`search.pareto.standalone.standalone_map`), else ``None``.
    ``map50_95_int8``/``int8_drop``: the INT8 mAP50-95 and the float-minus-INT8 drop in points of a trial with an
    INT8 target, else ``None``. ``map_metric``: the mAP the front is ranked on
    (:func:`~search.pareto.front.accuracy_metric`), kept as ``map_metric``: the ties, ``d_map_points`` and
    ``beats_stock`` compare it.
    """
    base = trial_metrics(baseline, latency) if baseline else {}
    base_ci = latency_interval(baseline, latency) if baseline else None
    intervals = [latency_interval(t, latency) for t in front]
    rows = []
    for i, t in enumerate(front):
        m, ci = trial_metrics(t, latency), intervals[i]
        neighbours = intervals[max(0, i - 1):i] + intervals[i + 1:i + 2]
        row = {"trial": t.number, "hash": t.user_attrs.get("hash"), "map50_95": m.get("map50_95"),
               "map50_95_int8": m.get("map50_95_int8"), "int8_drop": m.get("int8_drop"), "map_metric": map_metric,
               "map_spread": map_noise, "latency_ms": m.get("latency_ms"), "latency_ci": list(ci) if ci else None,
               "within_noise": any(intervals_overlap(ci, n) for n in neighbours),
               "params_m": m.get("params_m"), "blocks": blocks_label(t),
               "source": t.user_attrs.get("source", "trained"), "map50_95_alone": (alone or {}).get(t.number)}
        near = [trial_metrics(n, latency).get(map_metric, math.nan) for n in front[max(0, i - 1):i + 2] if n is not t]
        acc = m.get(map_metric, math.nan)
        row["map_within_noise"] = map_noise is not None and any(abs(acc - v) < map_noise for v in near)
        if base:
            d_map = acc - base.get(map_metric, math.nan)
            row["d_map_points"] = 100 * d_map
            row["d_map_within_noise"] = map_noise is not None and abs(d_map) <= map_noise
            row["latency_ratio"] = m.get("latency_ms", math.nan) / base["latency_ms"]
            row["beats_stock"] = beats_stock(d_map, map_noise, m.get("latency_ms", math.nan), base["latency_ms"],
                                             ci, base_ci)
        rows.append(row)
    return rows


ALONE_NOTE = "alone: stand-alone mAP50-95 of the architecture retrained at the search's schedule (- not retrained)"
NOISE_NOTE = "~ latency within the noise of a neighbouring row (their 95% intervals overlap)"
MAP_NOISE_NOTE = "~ after mAP: within the seed spread of a neighbouring row (measured by search.audit): a tie"
SPREAD_NOTE = ("+- the seed-to-seed spread of mAP50-95 at the search's schedule (search.audit); "
               "~ after dmAP: within it of stock, no difference")
INT8_NOTE = ("mAP50-95: the trained float model; INT8: its post-training quantized export on the latency target's "
             "runtime; drop: float export minus INT8 export, mAP50-95 points (same runtime, size and validator)")
INT8_RANK_NOTE = ("the front is ranked on INT8 mAP50-95: dINT8 pt, the ~ ties and the verdict against stock compare "
                  "it (the seed spread is float mAP50-95's)")
NO_SPREAD_NOTE = ("mAP seed spread not measured (python -m search.audit measures it): "
                  "no point is said to beat stock")


def _interval_text(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"


def _map_text(r: dict[str, Any]) -> str:
    spread = f"+-{r['map_spread']:.4f}" if r.get("map_spread") is not None else ""
    return f"{r['map50_95']:.4f}{spread}{'~' if r.get('map_within_noise') else ' '}"


def _alone_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _int8_text(r: dict[str, Any]) -> str:
    """The INT8 columns of a row: INT8 mAP50-95 and the drop in points (``-`` where the trial has none)."""
    int8, drop = r.get("map50_95_int8"), r.get("int8_drop")
    return f" {_alone_text(int8):>8} {'-' if drop is None else f'{drop:+.2f}':>7}"


def has_int8(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any row carries an INT8 mAP (the study's target is INT8): the table then shows both mAPs."""
    return any(r.get("map50_95_int8") is not None for r in rows)


def estimate_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """The line saying which rows' mAP50-95 is a supernet estimate (``None`` when none is)."""
    estimated = [r["trial"] for r in rows if r.get("source") == SUPERNET]
    if not estimated:
        return None
    which = "every row" if len(estimated) == len(rows) else f"trials {estimated}"
    return (f"mAP50-95 of {which}: supernet estimate (recalibrated BN; user attr source: supernet), "
            "a ranking signal, not a trained model's accuracy")


def beats_stock_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """The verdict against stock under the table (``None`` without a baseline)."""
    if not any("beats_stock" in r for r in rows):
        return None
    if all(r.get("map_spread") is None for r in rows):
        return NO_SPREAD_NOTE
    winners = [r["trial"] for r in rows if r.get("beats_stock")]
    if not winners:
        return "no front point beats stock beyond the noise (seed spread of mAP, 95% intervals of latency)"
    return (f"beats stock beyond the noise (worse in neither objective, better in one by more than the seed "
            f"spread of mAP or outside stock's latency interval): trials {winners}")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The front as a fixed-width text table; ``~`` after a latency within the noise of a neighbour's.

    mAP reads ``value+-spread`` once ``search.audit`` has measured the seed spread; the last line
    says which points beat stock beyond the noise (:func:`beats_stock`). With an INT8 target (:func:`has_int8`)
    the float mAP50-95 is followed by the INT8 one and the drop (``INT8``, ``drop pt``), and the delta against
    stock is the one the front is ranked on (``dINT8 pt`` when it is INT8 mAP).
    """
    width = 16 if any(r.get("map_spread") is not None for r in rows) else 9
    with_alone = any(r.get("map50_95_alone") is not None for r in rows)
    with_int8 = has_int8(rows)
    on_int8 = any(r.get("map_metric", MAP_METRIC) != MAP_METRIC for r in rows)
    alone_head = f" {'alone':>7}" if with_alone else ""
    int8_head = f" {'INT8':>8} {'drop pt':>7}" if with_int8 else ""
    head = (f"{'trial':>5} {'hash':<12} {'mAP50-95':>{width}}{int8_head}{alone_head} {'lat ms':>9} "
            f"{'lat 95% CI':>16} {'params M':>8} {'dINT8 pt' if on_int8 else 'dmAP pt':>8} {'lat x':>6}  blocks")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = f"{r['latency_ms']:.2f}{'~' if r.get('within_noise') else ' '}"
        d_map = f"{r.get('d_map_points', math.nan):+.2f}{'~' if r.get('d_map_within_noise') else ' '}"
        alone = "" if not with_alone else f" {_alone_text(r.get('map50_95_alone')):>7}"
        int8 = _int8_text(r) if with_int8 else ""
        lines.append(f"{r['trial']:>5} {r['hash']:<12} {_map_text(r):>{width}}{int8}{alone} {lat:>9} "
                     f"{_interval_text(r.get('latency_ci')):>16} {r['params_m']:>8.3f} "
                     f"{d_map:>8} {r.get('latency_ratio', math.nan):>6.3f}  "
                     f"{r['blocks']}")
    lines += table_notes(rows)
    return "\n".join(lines)


def table_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The lines under the table: what its marks and columns mean, and the verdict against stock."""
    lines = []
    if note := estimate_note(rows):
        lines.append(note)
    if has_int8(rows):
        lines.append(INT8_NOTE)
    if any(r.get("map_metric", MAP_METRIC) != MAP_METRIC for r in rows):
        lines.append(INT8_RANK_NOTE)
    if any(r.get("map50_95_alone") is not None for r in rows):
        lines.append(ALONE_NOTE)
    if any(r.get("within_noise") for r in rows):
        lines.append(NOISE_NOTE)
    if any(r.get("map_within_noise") for r in rows):
        lines.append(MAP_NOISE_NOTE)
    if any(r.get("map_spread") is not None for r in rows):
        lines.append(SPREAD_NOTE)
    if (verdict := beats_stock_line(rows)) is not None:
        lines.append(verdict)
    return lines


def write_report(study: optuna.Study, cfg: RunConfig,
                 latency: Mapping[int, LatencyReport] | None = None) -> dict[str, Any]:
    """Write ``pareto.json``, ``pareto.txt`` and the Pareto plots into ``cfg.folder``; return the summary.

    Both files start with the report's header (:class:`~search.pareto.header.ReportHeader`: study,
    data, head, latency target and conditions). ``latency``: figures replacing those trials' own
    (listed in the summary as ``latency_replaced``).
    """
    folder = cfg.folder
    folder.mkdir(parents=True, exist_ok=True)
    front = pareto_front(study, cfg.objectives, cfg.constraints, latency)
    baseline = baseline_trial(study)
    alone = standalone_map(study, cfg.trial.epochs, cfg.trial.imgsz)
    map_metric = accuracy_metric(cfg.objectives)
    rows = front_rows(front, baseline, latency, map_seed_spread(study), alone, map_metric)
    header = report_header(study.study_name, cfg, front, baseline, latency)
    hv = front_hypervolume(front, baseline, latency, map_metric)
    plots = write_plots(plot_data(study, cfg.objectives, cfg.constraints, front, header, latency, alone), folder)
    retrained = standalone_rows(study, alone, baseline.number if baseline else None, latency)
    presets = preset_rows(study, front, baseline, cfg.objectives, cfg.constraints, latency)
    summary = {"header": header.to_dict(), "study": study.study_name, "front": rows, "hypervolume": hv,
               "baseline_trial": baseline.number if baseline else None,
               "latency_replaced": sorted(latency) if latency else [], "plots": plots, "retrained": retrained,
               "presets": presets}
    (folder / "pareto.json").write_text(json.dumps(summary, indent=1, default=str))
    text = format_report_text(header, rows, hv)
    if retrained:
        text += "\n" + format_standalone(retrained, schedule_text(cfg)) + "\n"
    if presets:
        text += "\nDesign references (spaces/presets) against the front:\n" + format_presets(presets) + "\n"
    (folder / "pareto.txt").write_text(text)
    return summary


def schedule_text(cfg: RunConfig) -> str:
    """The stand-alone training schedule of ``cfg``'s trials in words."""
    t = cfg.trial
    return f"{t.epochs} epochs at {t.imgsz} px, batch {t.batch}, seed {t.seed}, on {t.data or 'the data'}"


def format_report_text(header: ReportHeader, rows: Sequence[dict[str, Any]], hv: dict[str, Any] | None) -> str:
    """``pareto.txt``: the header, the front's table, its hypervolume."""
    lines = [f"Pareto front ({len(rows)} points, feasible trials only; deltas vs the stock baseline)",
             *header.lines(), "", format_table(rows)]
    if hv:
        lines.append(hypervolume_line(hv))
    return "\n".join(lines) + "\n"


def hypervolume_line(hv: dict[str, Any]) -> str:
    """The hypervolume of :func:`~search.pareto.front.front_hypervolume` in one line, with its spread and reference."""
    metric = hv.get("map_metric", MAP_METRIC)
    ref = hv["reference"]
    title = "INT8 mAP50-95" if metric != MAP_METRIC else "mAP50-95"
    return (f"Hypervolume {hv['hypervolume']:.4f} ({hv['hypervolume_low']:.4f} to {hv['hypervolume_high']:.4f} "
            f"within latency noise; reference: {title} {ref[metric]:g}, latency {ref['latency_ms']:.2f} ms = "
            "2x baseline)")
