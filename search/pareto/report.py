"""The Pareto front as people read it: rows with deltas against the stock baseline, a table, JSON, plots.

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

from search.config import RunConfig
from search.pareto.front import (
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
from trainers.latency.report import LatencyReport


def front_rows(front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
               latency: Mapping[int, LatencyReport] | None = None,
               map_noise: float | None = None) -> list[dict[str, Any]]:
    """One dict per front point: trial, hash, mAP, latency and its interval, params, blocks, deltas vs the baseline.

    ``latency_ci``: the 95% interval of the latency median (``None`` when its report has none);
    ``within_noise``: whether it overlaps the interval of a neighbouring row (the row before or
    after in ``front``'s order), i.e. their latency difference is noise. ``map_within_noise``:
    whether its mAP differs from a neighbour's by less than ``map_noise`` (the seed spread
    measured by ``search.audit``), i.e. the two are tied on accuracy.
    """
    base = trial_metrics(baseline, latency) if baseline else {}
    intervals = [latency_interval(t, latency) for t in front]
    rows = []
    for i, t in enumerate(front):
        m, ci = trial_metrics(t, latency), intervals[i]
        neighbours = intervals[max(0, i - 1):i] + intervals[i + 1:i + 2]
        row = {"trial": t.number, "hash": t.user_attrs.get("hash"), "map50_95": m.get("map50_95"),
               "latency_ms": m.get("latency_ms"), "latency_ci": list(ci) if ci else None,
               "within_noise": any(intervals_overlap(ci, n) for n in neighbours),
               "params_m": m.get("params_m"), "blocks": blocks_label(t)}
        near = [trial_metrics(n, latency).get("map50_95", math.nan) for n in front[max(0, i - 1):i + 2] if n is not t]
        acc = m.get("map50_95", math.nan)
        row["map_within_noise"] = map_noise is not None and any(abs(acc - v) < map_noise for v in near)
        if base:
            row["d_map_points"] = 100 * (m.get("map50_95", math.nan) - base["map50_95"])
            row["latency_ratio"] = m.get("latency_ms", math.nan) / base["latency_ms"]
        rows.append(row)
    return rows


NOISE_NOTE = "~ latency within the noise of a neighbouring row (their 95% intervals overlap)"
MAP_NOISE_NOTE = "~ after mAP: within the seed spread of a neighbouring row (measured by search.audit): a tie"


def _interval_text(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The front as a fixed-width text table; ``~`` after a latency within the noise of a neighbour's."""
    head = (f"{'trial':>5} {'hash':<12} {'mAP50-95':>9} {'lat ms':>9} {'lat 95% CI':>16} {'params M':>8} "
            f"{'dmAP pt':>7} {'lat x':>6}  blocks")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = f"{r['latency_ms']:.2f}{'~' if r.get('within_noise') else ' '}"
        acc = f"{r['map50_95']:.4f}{'~' if r.get('map_within_noise') else ' '}"
        lines.append(f"{r['trial']:>5} {r['hash']:<12} {acc:>9} {lat:>9} "
                     f"{_interval_text(r.get('latency_ci')):>16} {r['params_m']:>8.3f} "
                     f"{r.get('d_map_points', math.nan):>+7.2f} {r.get('latency_ratio', math.nan):>6.3f}  "
                     f"{r['blocks']}")
    if any(r.get("within_noise") for r in rows):
        lines.append(NOISE_NOTE)
    if any(r.get("map_within_noise") for r in rows):
        lines.append(MAP_NOISE_NOTE)
    return "\n".join(lines)


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
    map_noise = (study.user_attrs.get("audit") or {}).get("map_noise")
    rows = front_rows(front, baseline, latency, map_noise)
    header = report_header(study.study_name, cfg, front, baseline, latency)
    hv = front_hypervolume(front, baseline, latency)
    plots = write_plots(plot_data(study, cfg.objectives, cfg.constraints, front, header, latency), folder)
    summary = {"header": header.to_dict(), "study": study.study_name, "front": rows, "hypervolume": hv,
               "baseline_trial": baseline.number if baseline else None,
               "latency_replaced": sorted(latency) if latency else [], "plots": plots}
    (folder / "pareto.json").write_text(json.dumps(summary, indent=1, default=str))
    (folder / "pareto.txt").write_text(format_report_text(header, rows, hv))
    return summary


def format_report_text(header: ReportHeader, rows: Sequence[dict[str, Any]], hv: dict[str, Any] | None) -> str:
    """``pareto.txt``: the header, the front's table, its hypervolume."""
    lines = [f"Pareto front ({len(rows)} points, feasible trials only; deltas vs the stock baseline)",
             *header.lines(), "", format_table(rows)]
    if hv:
        ref = hv["reference"]
        lines.append(f"Hypervolume {hv['hypervolume']:.4f} ({hv['hypervolume_low']:.4f} to "
                     f"{hv['hypervolume_high']:.4f} within latency noise; reference: mAP50-95 {ref['map50_95']:g}, "
                     f"latency {ref['latency_ms']:.2f} ms = 2x baseline)")
    return "\n".join(lines) + "\n"
