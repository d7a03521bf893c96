"""Fit and validate a latency cost model on a space: sample, measure interleaved with stock, fit, score.

Every figure is a ratio to the stock model measured in the same interleaved group (round-robin
bursts, :func:`trainers.latency.interleaved.measure_interleaved`), so figures from groups minutes
apart are comparable on a shared CPU. The fit set always holds stock and the space's corners; the
validation set is drawn with another seed and never holds an architecture of the fit. The noise floor
is the same statistics for architectures measured twice, in two separate passes: no predictor can
beat re-measurement.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search.pareto.ranks import kendall_tau, spearman_rho
from search.space import SearchSpace
from search.space.corners import corners, samples
from trainers.latency.feature_cache import shared_cache
from trainers.latency.features import GraphFeatures
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture

__all__ = ["Measured", "Measurement", "error_stats", "graphs_of", "measure_ratios", "sample_architectures",
           "stock_groups"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Measurement:
    """How to time: rounds x repeats per model, models per interleaved group (plus stock), class count."""

    rounds: int = 6
    repeats: int = 2
    group: int = 6
    nc: int = 80


@dataclass(frozen=True)
class Measured:
    """Architectures with their fused-graph features, measured ratios to stock, and the stock figure (ms)."""

    archs: tuple[Architecture, ...]
    graphs: tuple[GraphFeatures, ...]
    ratios: tuple[float, ...]
    stock_ms: float


def sample_architectures(space: SearchSpace, n: int, seed: int, exclude: frozenset[str] = frozenset(),
                         with_corners: bool = True) -> list[Architecture]:
    """Stock, the corners (``with_corners``) and random draws (``seed``) up to ``n`` distinct architectures,
    none of whose hashes is in ``exclude``."""
    picked: dict[str, Architecture] = {}
    pool = ([space.baseline(), *corners(space).values()] if with_corners else [])
    pool += list(samples(space, 4 * n + 50, seed).values())
    for arch in pool:
        if arch.hash not in exclude and arch.hash not in picked:
            picked[arch.hash] = arch
        if len(picked) >= n:
            break
    return list(picked.values())


def stock_groups(archs: Sequence[Architecture], setting: LatencySetting, how: Measurement,
                 log: Log) -> Iterator[tuple[list[Any], list[LatencyReport], float]]:
    """Per interleaved group of ``how.group`` architectures measured with stock: their models, reports, stock ms."""
    from trainers.latency.interleaved import measure_interleaved
    from trainers.model.build import build_model

    for start in range(0, len(archs), how.group):
        chunk, t0 = archs[start:start + how.group], time.perf_counter()
        models = [build_model(Architecture.baseline(), nc=how.nc)] + [build_model(a, nc=how.nc) for a in chunk]
        reports = measure_interleaved(models, setting, rounds=how.rounds, repeats=how.repeats, warmup=1)
        log(f"group {start // how.group + 1}/{math.ceil(len(archs) / how.group)}: stock "
            f"{reports[0].median_ms:.1f} ms, {len(chunk)} models, {time.perf_counter() - t0:.0f} s")
        yield models[1:], reports[1:], reports[0].median_ms


def measure_ratios(archs: Sequence[Architecture], setting: LatencySetting, how: Measurement,
                   log: Log) -> Measured:
    """Features and ratio to stock of each architecture, measured in interleaved groups that each hold stock."""
    graphs: list[GraphFeatures] = []
    ratios: list[float] = []
    stocks: list[float] = []
    cache = shared_cache(setting.imgsz, setting.head, how.nc)
    for models, reports, stock in stock_groups(archs, setting, how, log):
        stocks.append(stock)
        ratios += [r.median_ms / stock for r in reports]
        graphs += [cache.features(a, m) for a, m in zip(archs[len(graphs):], models)]
    return Measured(tuple(archs), tuple(graphs), tuple(ratios), statistics.median(stocks))


def graphs_of(archs: Sequence[Architecture], setting: LatencySetting, nc: int = 80) -> list[GraphFeatures]:
    """The fused-graph features of each architecture in ``setting`` (no measurement; layer-cached)."""
    cache = shared_cache(setting.imgsz, setting.head, nc)
    return [cache.features(a) for a in archs]


def error_stats(predicted: Sequence[float], measured: Sequence[float]) -> Mapping[str, float]:
    """MAPE (%), RMSE of the ratio, max |error| (%), share within +-5% / +-10%, Kendall tau, Spearman rho, and
    the 95th percentiles of the signed error (%) both ways: ``p95_over_pct`` (predicted above measured: the latency
    budget's margin) and ``p95_under_pct``."""
    rel = [100 * (p - m) / m for p, m in zip(predicted, measured)]
    absrel = sorted(abs(r) for r in rel)
    n = len(rel)
    return {"n": n, "mape_pct": statistics.fmean(absrel),
            "rmse_ratio": math.sqrt(statistics.fmean((p - m) ** 2 for p, m in zip(predicted, measured))),
            "max_err_pct": absrel[-1], "within_5pct": sum(r <= 5 for r in absrel) / n,
            "within_10pct": sum(r <= 10 for r in absrel) / n,
            "kendall_tau": kendall_tau(predicted, measured), "spearman_rho": spearman_rho(predicted, measured),
            "p95_under_pct": -sorted(rel)[max(0, math.ceil(0.05 * n) - 1)],
            "p95_over_pct": sorted(rel)[max(0, math.ceil(0.95 * n) - 1)]}


def stats_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A short text table of :func:`error_stats` rows (predictor, noise floor)."""
    head = f"{'':<14}{'n':>5}{'MAPE %':>8}{'RMSE':>8}{'max %':>7}{'<=5%':>6}{'<=10%':>7}{'tau':>6}{'rho':>6}"
    lines = [head]
    for name, s in rows.items():
        lines.append(f"{name:<14}{s['n']:>5}{s['mape_pct']:>8.2f}{s['rmse_ratio']:>8.4f}{s['max_err_pct']:>7.1f}"
                     f"{s['within_5pct']:>6.0%}{s['within_10pct']:>7.0%}{s['kendall_tau']:>6.2f}"
                     f"{s['spearman_rho']:>6.2f}")
    return "\n".join(lines)


def scatter_png(predicted: Sequence[float], measured: Sequence[float], path: Any, title: str) -> None:
    """Predicted vs measured ratio to stock, with the identity line, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(measured, predicted, s=12)
    lo, hi = min(*measured, *predicted), max(*measured, *predicted)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured latency / stock (interleaved)")
    ax.set_ylabel("predicted latency / stock")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
