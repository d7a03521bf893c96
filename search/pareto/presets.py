"""Where each design reference's preset lands against the found front (``search.run --include-presets``).

One row per COMPLETE preset trial (user attr ``preset``): its mAP50-95, latency (the interleaved
re-measure's figure when there is one) and ratio to stock, params, and where it stands: on the
front, or which front trials dominate it (latency compared with noise, as the front is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto.dominance import dominates
from search.pareto.front import minimized_values, trial_metrics
from search.space import Constraint
from trainers.latency.report import LatencyReport

__all__ = ["format_presets", "preset_rows", "preset_trials"]


def preset_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE preset trials, the first of each preset, in trial order."""
    seen: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (name := t.user_attrs.get("preset")) and name not in seen:
            seen[name] = t
    return list(seen.values())


def preset_rows(study: optuna.Study, front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
                objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint] = (),
                latency: Mapping[int, LatencyReport] | None = None) -> list[dict[str, Any]]:
    """One dict per preset: name, reference, trial, mAP, latency, ratio to stock, params, on_front, dominated_by.

    ``dominated_by``: the front trials whose objective values dominate the preset's (exact comparison);
    ``breaks``: the constraints it breaks (a preset is trained even then, and never on the front).
    """
    base = trial_metrics(baseline, latency) if baseline is not None else {}
    on_front = {t.number for t in front}
    rows = []
    for t in preset_trials(study):
        m = trial_metrics(t, latency)
        mine = minimized_values(t, objectives, latency)
        rows.append({
            "preset": t.user_attrs["preset"], "reference": t.user_attrs.get("preset_reference", ""),
            "trial": t.number, "hash": t.user_attrs.get("hash"), "map50_95": m.get("map50_95"),
            "latency_ms": m.get("latency_ms"), "params_m": m.get("params_m"),
            "latency_ratio": (m["latency_ms"] / base["latency_ms"]) if base and "latency_ms" in m else None,
            "d_map_points": 100 * (m["map50_95"] - base["map50_95"]) if base and "map50_95" in m else None,
            "on_front": t.number in on_front,
            "breaks": [str(c) for c in constraints if c.metric in m and c.violation(m[c.metric]) > 0],
            "dominated_by": [f.number for f in front
                             if f.number != t.number and dominates(minimized_values(f, objectives, latency), mine)],
        })
    return rows


def format_presets(rows: Sequence[dict[str, Any]]) -> str:
    """The presets' table, one line each, and where each stands."""
    lines = [f"{'preset':<20} {'trial':>5} {'mAP50-95':>8} {'dmAP pt':>7} {'latency ms':>10} {'x stock':>7} "
             f"{'params M':>8}  where"]
    for r in rows:
        where = "on the front" if r["on_front"] else (
            f"dominated by trials {r['dominated_by']}" if r["dominated_by"] else "off the front (within noise)")
        if r.get("breaks"):
            where = f"infeasible (breaks {', '.join(r['breaks'])}); " + where
        d_map = f"{r['d_map_points']:+7.2f}" if r["d_map_points"] is not None else f"{'-':>7}"
        ratio = f"{r['latency_ratio']:7.2f}" if r["latency_ratio"] is not None else f"{'-':>7}"
        lines.append(f"{r['preset']:<20} {r['trial']:>5} {r['map50_95']:>8.4f} {d_map} {r['latency_ms']:>10.2f} "
                     f"{ratio} {r['params_m']:>8.3f}  {where}")
    return "\n".join(lines)
