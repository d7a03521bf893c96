"""The Pareto front of a study: feasible trials, one per architecture, none dominated.

Also its table (with deltas against the stock baseline), its hypervolume against a stated
reference point, and Optuna's Pareto plot written next to the study.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.space import Constraint


def is_feasible(t: FrozenTrial, constraints: Sequence[Constraint]) -> bool:
    """Whether every constraint holds for the trial's recorded metrics."""
    metrics = t.user_attrs.get("metrics", {})
    return all(c.metric not in metrics or c.violation(metrics[c.metric]) <= 0 for c in constraints)


def _as_min(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions)]


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(study: optuna.Study, objectives: Sequence[tuple[str, str]],
                 constraints: Sequence[Constraint] = ()) -> list[FrozenTrial]:
    """Feasible COMPLETE trials not dominated by another, one per architecture hash, sorted by the last objective."""
    directions = [d for _, d in objectives]
    seen: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_feasible(t, constraints) and t.user_attrs.get("hash") not in seen:
            seen[t.user_attrs.get("hash", str(t.number))] = t
    cands = list(seen.values())
    pts = {t.number: _as_min(t.values, directions) for t in cands}
    front = [t for t in cands if not any(_dominates(pts[o.number], pts[t.number]) for o in cands)]
    return sorted(front, key=lambda t: t.values[-1])


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


def front_hypervolume(front: Sequence[FrozenTrial], baseline: FrozenTrial | None) -> dict[str, Any] | None:
    """Hypervolume in (mAP50-95, latency ms) against mAP 0 and 2x the baseline's latency."""
    if baseline is None or not front or "latency_ms" not in baseline.user_attrs.get("metrics", {}):
        return None
    ref = (0.0, 2.0 * baseline.user_attrs["metrics"]["latency_ms"])
    pts = [(t.user_attrs["metrics"]["map50_95"], t.user_attrs["metrics"]["latency_ms"]) for t in front]
    return {"hypervolume": hypervolume_2d(pts, ref), "reference": {"map50_95": ref[0], "latency_ms": ref[1]}}


def front_rows(front: Sequence[FrozenTrial], baseline: FrozenTrial | None) -> list[dict[str, Any]]:
    """One dict per front point: trial, hash, mAP, latency, params, blocks, deltas vs the baseline."""
    base = baseline.user_attrs.get("metrics", {}) if baseline else {}
    rows = []
    for t in front:
        m = t.user_attrs.get("metrics", {})
        row = {"trial": t.number, "hash": t.user_attrs.get("hash"), "map50_95": m.get("map50_95"),
               "latency_ms": m.get("latency_ms"), "params_m": m.get("params_m"), "blocks": t.user_attrs.get("blocks")}
        if base:
            row["d_map_points"] = 100 * (m.get("map50_95", math.nan) - base["map50_95"])
            row["latency_ratio"] = m.get("latency_ms", math.nan) / base["latency_ms"]
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The front as a fixed-width text table."""
    head = (f"{'trial':>5} {'hash':<12} {'mAP50-95':>8} {'lat ms':>8} {'params M':>8} {'dmAP pt':>7} {'lat x':>6}"
            "  blocks")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['trial']:>5} {r['hash']:<12} {r['map50_95']:>8.4f} {r['latency_ms']:>8.2f} "
                     f"{r['params_m']:>8.3f} {r.get('d_map_points', math.nan):>+7.2f} "
                     f"{r.get('latency_ratio', math.nan):>6.3f}  {r['blocks']}")
    return "\n".join(lines)


def write_report(study: optuna.Study, folder: Path, objectives: Sequence[tuple[str, str]],
                 constraints: Sequence[Constraint]) -> dict[str, Any]:
    """Write ``pareto.json``, ``pareto.txt`` and the Pareto plot(s) into ``folder``; return the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    front = pareto_front(study, objectives, constraints)
    baseline = baseline_trial(study)
    rows = front_rows(front, baseline)
    summary = {"study": study.study_name, "front": rows, "hypervolume": front_hypervolume(front, baseline),
               "baseline_trial": baseline.number if baseline else None,
               "plots": _write_plots(study, folder, objectives)}
    (folder / "pareto.json").write_text(json.dumps(summary, indent=1, default=str))
    (folder / "pareto.txt").write_text(format_table(rows) + "\n")
    return summary


def _write_plots(study: optuna.Study, folder: Path, objectives: Sequence[tuple[str, str]]) -> list[str]:
    names = [m for m, _ in objectives]
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) or not 2 <= len(names) <= 3:
        return []
    written = []
    try:
        fig = optuna.visualization.plot_pareto_front(study, target_names=names)
        fig.write_html(str(folder / "pareto.html"))
        written.append(str(folder / "pareto.html"))
    except Exception:  # plotly missing or too old: the PNG below still tells the story
        pass
    try:
        import matplotlib

        matplotlib.use("Agg")
        ax = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=names)
        figure: Any = ax.get_figure(root=True)
        figure.savefig(folder / "pareto.png", dpi=120, bbox_inches="tight")
        written.append(str(folder / "pareto.png"))
    except Exception:
        pass
    return written
