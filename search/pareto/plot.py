"""``pareto.png`` (matplotlib) and ``pareto.html`` (plotly), drawn for people from one :class:`PlotData`.

Every COMPLETE architecture of the study is a point (its first trial), labelled with its trial
number: the front's points joined by the staircase of what they dominate, with their 95%
latency intervals; the other feasible trials; those breaking a constraint; the stock baseline
marked. Axis titles carry units and, for latency, every condition of the figures (backend,
device, dtype, batch, image size, threads, head). The figures are the report's: a latency that
an interleaved re-measure replaced is drawn at its new value.

Plotting libraries are optional here: one missing prints one warning line and that file is not
written; the report goes on.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto.front import LATENCY_METRIC, blocks_label, is_feasible, latency_interval, trial_metrics
from search.pareto.header import ReportHeader
from search.space import Constraint
from trainers.cli import log
from trainers.latency.report import LatencyReport

METRIC_TITLES = {"map50_95": "mAP50-95", "map50": "mAP50", "latency_ms": "latency, ms (median)",
                 "params_m": "parameters, millions", "gflops": "GFLOPs",
                 "map50_95_int8": "mAP50-95 of the INT8 model (post-training quantized)",
                 "int8_drop": "INT8 drop, mAP50-95 points (float export minus INT8)"}
FLOAT_MAP_TITLE = "mAP50-95 of the float model (not quantized)"  # the float mAP of a study with an INT8 target


@dataclass(frozen=True)
class PlotPoint:
    """One architecture: its trial number, its values on the two axes, what it is."""

    number: int
    x: float
    y: float
    on_front: bool
    feasible: bool
    baseline: bool
    x_interval: tuple[float, float] | None  # 95% interval of a latency median on x
    blocks: str
    alone: float | None = None  # stand-alone mAP of a retrained architecture whose y is a supernet estimate


@dataclass(frozen=True)
class PlotData:
    """What the Pareto plot shows: points, axis titles, title, how the front's staircase runs."""

    points: tuple[PlotPoint, ...]
    x_title: str
    y_title: str
    title: str
    note: str
    x_minimized: bool

    @property
    def front(self) -> list[PlotPoint]:
        """The front's points by x."""
        return sorted((p for p in self.points if p.on_front), key=lambda p: p.x)


def _axis_title(metric: str, header: ReportHeader, estimate: bool = False) -> str:
    """The axis title of ``metric``: units, latency conditions, and with an INT8 target which mAP it is."""
    title = FLOAT_MAP_TITLE if metric == "map50_95" and header.int8 else METRIC_TITLES.get(metric, metric)
    if estimate and metric.startswith("map"):
        title = f"{title}: supernet estimate (recalibrated BN)"
    if metric == LATENCY_METRIC and header.latency_conditions:
        return f"{title}, 95% interval on the front\n{header.latency_conditions}"
    if metric.startswith("map"):
        data = Path(header.data).name if header.data else "the data"
        return f"{title} on the val set of {data}\n{header.train}, head {header.head}"
    return title


def plot_data(study: optuna.Study, objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint],
              front: Sequence[FrozenTrial], header: ReportHeader,
              latency: Mapping[int, LatencyReport] | None = None,
              alone: Mapping[int, float] | None = None) -> PlotData | None:
    """The plot of a two-objective study (``None`` for another number of objectives, or no COMPLETE trial).

    x: latency when it is an objective, else the second objective; y: the other one. When y is mAP50-95 and
    the trials' mAP is a supernet estimate (user attr ``source: supernet``), the y title says so and each
    retrained architecture's stand-alone mAP (``alone``, by trial) is drawn beside its estimate.
    """
    if len(objectives) != 2:
        return None
    lat = [o for o in objectives if o[0] == LATENCY_METRIC]
    (x_metric, x_dir), (y_metric, _) = (lat[0], next(o for o in objectives if o not in lat)) if lat else (
        objectives[1], objectives[0])
    on_front = {t.number for t in front}
    seen: dict[str, PlotPoint] = {}
    estimate = False
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        estimate = estimate or t.user_attrs.get("source") == "supernet"
        m = trial_metrics(t, latency)
        key = str(t.user_attrs.get("hash", t.number))
        if key in seen or x_metric not in m or y_metric not in m:
            continue
        seen[key] = PlotPoint(t.number, float(m[x_metric]), float(m[y_metric]), t.number in on_front,
                              is_feasible(t, constraints), t.number == header.baseline_trial,
                              latency_interval(t, latency) if x_metric == LATENCY_METRIC else None,
                              blocks_label(t), (alone or {}).get(t.number) if y_metric == "map50_95" else None)
    if not seen:
        return None
    title = f"Study '{header.study}': {len(on_front)} of {len(seen)} architectures on the Pareto front"
    note = f"latency: {header.latency_source}" if lat else ""
    return PlotData(tuple(seen.values()), _axis_title(x_metric, header), _axis_title(y_metric, header, estimate),
                    title, note, x_dir == "minimize")


def _optional(module: str, file: str) -> ModuleType | None:
    """``module`` imported, or ``None`` after one warning line saying ``file`` is not drawn."""
    try:
        return importlib.import_module(module)
    except ImportError:
        log(f"warning: {module} is not installed: {file} not drawn (pip install {module})")
        return None


def draw_png(data: PlotData, path: Path) -> None:
    """Draw ``data`` into a PNG with matplotlib (its object API: no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), layout="constrained")
    ax = fig.add_subplot()
    groups: list[tuple[str, list[PlotPoint], dict[str, Any]]] = [
        ("on the Pareto front", [p for p in data.points if p.on_front], {"color": "tab:red", "s": 40}),
        ("other trials", [p for p in data.points if p.feasible and not p.on_front],
         {"color": "tab:blue", "alpha": 0.6, "s": 25}),
        ("breaks a constraint", [p for p in data.points if not p.feasible], {"color": "grey", "marker": "x", "s": 25})]
    for label, points, style in groups:
        if points:
            ax.scatter([p.x for p in points], [p.y for p in points], label=label, zorder=3, **style)
    front = data.front
    ax.plot([p.x for p in front], [p.y for p in front], color="tab:red", linewidth=1, linestyle="--",
            drawstyle="steps-post" if data.x_minimized else "steps-pre", label="front (what it dominates)")
    with_ci = [p for p in front if p.x_interval is not None]
    if with_ci:
        ax.errorbar([p.x for p in with_ci], [p.y for p in with_ci], fmt="none", ecolor="tab:red", alpha=0.5,
                    xerr=[[p.x - p.x_interval[0] for p in with_ci if p.x_interval],
                          [p.x_interval[1] - p.x for p in with_ci if p.x_interval]])
    retrained = [(p, p.alone) for p in data.points if p.alone is not None]
    if retrained:
        ax.scatter([p.x for p, _ in retrained], [alone for _, alone in retrained], marker="D", s=40, facecolor="none",
                   edgecolor="tab:green", zorder=4, label="retrained stand-alone (same architecture)")
        for p, alone in retrained:
            ax.plot([p.x, p.x], [p.y, alone], color="tab:green", linewidth=0.8, alpha=0.6)
    for p in data.points:
        if p.baseline:
            ax.scatter([p.x], [p.y], marker="*", s=260, facecolor="none", edgecolor="black", zorder=4,
                       label=f"stock baseline (trial {p.number})")
        ax.annotate(str(p.number), (p.x, p.y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel(data.x_title)
    ax.set_ylabel(data.y_title)
    ax.set_title(f"{data.title}\n{data.note}" if data.note else data.title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=120)


def draw_html(data: PlotData, path: Path) -> None:
    """Draw ``data`` into an HTML page with plotly (hover: trial, values, blocks)."""
    import plotly.graph_objects as go

    fig = go.Figure()

    def trace(name: str, points: Sequence[PlotPoint], **style: Any) -> None:
        if points:
            fig.add_trace(go.Scatter(
                x=[p.x for p in points], y=[p.y for p in points], name=name, text=[str(p.number) for p in points],
                textposition="top right", hovertext=[f"trial {p.number}: {p.blocks}" for p in points], **style))

    front = data.front
    trace("front (what it dominates)", front, mode="lines", line={"color": "red", "dash": "dash", "width": 1,
                                                                  "shape": "hv" if data.x_minimized else "vh"})
    trace("on the Pareto front", front, mode="markers+text", marker={"color": "red", "size": 9},
          error_x={"type": "data", "symmetric": False,
                   "array": [p.x_interval[1] - p.x if p.x_interval else 0 for p in front],
                   "arrayminus": [p.x - p.x_interval[0] if p.x_interval else 0 for p in front]})
    trace("other trials", [p for p in data.points if p.feasible and not p.on_front], mode="markers+text",
          marker={"color": "steelblue", "size": 7, "opacity": 0.6})
    trace("breaks a constraint", [p for p in data.points if not p.feasible], mode="markers+text",
          marker={"color": "grey", "symbol": "x", "size": 7})
    retrained = [p for p in data.points if p.alone is not None]
    if retrained:
        fig.add_trace(go.Scatter(x=[p.x for p in retrained], y=[p.alone for p in retrained], mode="markers",
                                 name="retrained stand-alone (same architecture)",
                                 marker={"symbol": "diamond-open", "size": 9, "color": "green"},
                                 hovertext=[f"trial {p.number} stand-alone: {p.blocks}" for p in retrained]))
    trace("stock baseline", [p for p in data.points if p.baseline], mode="markers",
          marker={"symbol": "star-open", "size": 18, "color": "black"})
    fig.update_layout(title=f"{data.title}<br><sub>{data.note}</sub>", xaxis_title=data.x_title.replace("\n", "<br>"),
                      yaxis_title=data.y_title.replace("\n", "<br>"), template="plotly_white")
    fig.write_html(str(path))


def write_plots(data: PlotData | None, folder: Path) -> list[str]:
    """Draw ``pareto.png`` and ``pareto.html`` into ``folder``; the paths written.

    A missing plotting library or a drawing error: one warning line, that file not written.
    """
    if data is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module, draw in (("pareto.png", "matplotlib", draw_png), ("pareto.html", "plotly", draw_html)):
        if _optional(module, name) is None:
            continue
        try:
            draw(data, folder / name)
        except Exception as e:  # a drawing bug must not lose the report of a finished search
            log(f"warning: {name} not drawn: {type(e).__name__}: {e}"[:300])
            continue
        written.append(str(folder / name))
    return written
