"""The timing loops behind every latency figure: CPU wall clock, CUDA events (eager or CUDA-graph replay).

Public so that ``bench/`` times exactly what a trial's latency report times. Each function
takes a ready model (fused, on its device, in its dtype) and an input, and returns the
per-forward times in milliseconds; :func:`summarize` turns them into median, p90, mean and
coefficient of variation.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

Forward = Callable[[torch.Tensor], Any]
"""What is timed: a model, or a model plus its post-processing (anything called on the input batch)."""

__all__ = ["cuda_graph_runner", "median_interval", "summarize", "time_cpu", "time_cuda", "time_cuda_events"]


def median_interval(times_ms: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free ~95% interval of the median: the order statistics at ``n/2 -+ z*sqrt(n)/2``."""
    ordered = sorted(times_ms)
    n = len(ordered)
    half = z * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half) - 1), min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], ordered[hi]


def summarize(times_ms: list[float]) -> dict[str, float]:
    """``median_ms``, ``p90_ms``, ``mean_ms``, ``cv`` (population std / mean) and the median's interval."""
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    cv = statistics.pstdev(ordered) / mean if mean > 0 else 0.0
    lo, hi = median_interval(ordered)
    return {"median_ms": statistics.median(ordered), "p90_ms": p90, "mean_ms": mean, "cv": cv, "ci_low_ms": lo,
            "ci_high_ms": hi}


def time_cpu(model: Forward, x: torch.Tensor, warmup: int, repeats: int, min_seconds: float = 0.0) -> list[float]:
    """``repeats`` timed forwards after ``warmup`` untimed ones (more, up to 10x, until ``min_seconds`` passed)."""
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        begin = time.perf_counter()
        while len(times) < repeats or (time.perf_counter() - begin < min_seconds and len(times) < 10 * repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(1e3 * (time.perf_counter() - t0))
    return times


def time_cuda_events(run: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``run``, each bracketed by CUDA events, after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def cuda_graph_runner(model: Forward, x: torch.Tensor, warmup: int = 3) -> Callable[[], Any] | None:
    """A function replaying ``model(x)`` captured in a CUDA graph, or ``None`` when capture fails.

    The model is warmed up on a side stream first, as CUDA-graph capture requires.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(max(3, warmup)):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            model(x)
    except Exception:  # capture fails on ops that sync with the host
        torch.cuda.synchronize()
        return None
    return graph.replay


def time_cuda(model: Forward, x: torch.Tensor, warmup: int, repeats: int) -> tuple[list[float], str]:
    """CUDA-graph replays of ``model(x)`` timed with CUDA events; eager if capture fails. Returns ``(times, mode)``."""
    replay = cuda_graph_runner(model, x, warmup)
    if replay is not None:
        return time_cuda_events(replay, warmup, repeats), "graph"

    def eager() -> Any:
        with torch.no_grad():
            return model(x)

    return time_cuda_events(eager, warmup, repeats), "eager"
