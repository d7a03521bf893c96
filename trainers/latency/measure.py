"""Honest latency of a fused model: CUDA-graph replay on GPUs, many timed repeats on CPUs.

On CUDA, eager PyTorch at batch 1 measures Python launch overhead, not the model, so the
fused fp16 forward is captured in a CUDA graph and each replay is timed with CUDA events
(eager only if capture fails, and the report says so). On CPU the float32 forward runs with a
fixed thread count and enough repeats to report the spread. Every report carries its device,
dtype, batch, image size, threads and torch version. Measurements hold the device lock
exclusively (see :mod:`trainers.device_lock`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.architecture import Architecture
from trainers.device_lock import device_lock
from trainers.inference import fused_copy
from trainers.latency.report import LatencyReport

DEFAULT_CPU_THREADS = 1  # one thread: on a small shared CPU, more threads wait on each other and the spread explodes


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> first CUDA GPU if present, else CPU; a bare index ``N`` -> ``cuda:N``."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.isdigit():
        device = f"cuda:{device}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return dev


def device_name(dev: torch.device) -> str:
    """Human name of a device: the GPU's name, or ``cpu (<processor>)``."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _summary(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    mean = statistics.fmean(ordered)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    cv = statistics.pstdev(ordered) / mean if mean > 0 else 0.0
    return {"median_ms": statistics.median(ordered), "p90_ms": p90, "mean_ms": mean, "cv": cv}


def _time_cuda(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> tuple[list[float], str]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(max(3, warmup)):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    run: Callable[[], Any]
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            model(x)
        run, mode = graph.replay, "graph"
    except Exception:  # capture can fail on ops that sync with the host: fall back, and say so
        torch.cuda.synchronize()

        def run() -> Any:
            with torch.no_grad():
                return model(x)

        mode = "eager"
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
    return times, mode


def _time_cpu(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int, min_seconds: float) -> list[float]:
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


def measure_latency(model: nn.Module, imgsz: int = 640, device: str = "auto", dtype: str = "auto",
                    batch: int = 1, fused: bool = True, warmup: int | None = None, repeats: int | None = None,
                    threads: int = DEFAULT_CPU_THREADS, min_seconds: float = 1.0) -> LatencyReport:
    """Measure ``model``'s forward latency on a deep copy (``model`` itself is untouched).

    ``fused``: Ultralytics ``fuse()`` + ``blocks.reparameterize_model`` in float32 first;
    ``False`` measures the training form as is. ``dtype`` ``auto``: float16 on CUDA, float32 on CPU.
    """
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    dt = {"auto": torch.float16 if cuda else torch.float32, "float16": torch.float16,
          "float32": torch.float32}[dtype]
    net = fused_copy(model, ultralytics_fuse=fused, ours=fused).to(dev, dt)
    x = torch.rand(batch, 3, imgsz, imgsz, device=dev, dtype=dt)
    with device_lock(str(dev), exclusive=True):
        if cuda:
            times, mode = _time_cuda(net, x, warmup or 20, repeats or 200)
            used_threads = torch.get_num_threads()
        else:
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                times, mode = _time_cpu(net, x, warmup or 3, repeats or 20, min_seconds), "eager"
            finally:
                torch.set_num_threads(old)
            used_threads = threads
    return LatencyReport(**_summary(times), n=len(times), mode=mode, device=device_name(dev),
                         dtype=str(dt).replace("torch.", ""), batch=batch, imgsz=imgsz, threads=used_threads,
                         torch=torch.__version__, fused=fused)


class LatencyCache:
    """Latency reports on disk, keyed by (architecture hash, device name, imgsz, dtype, batch, torch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def key(arch_hash: str, device: str, imgsz: int, dtype: str, batch: int, fused: bool = True,
            threads: int = DEFAULT_CPU_THREADS) -> str:
        """The cache key of one measurement setting (CPU thread count included; 0 on CUDA)."""
        return "|".join([arch_hash, device, str(imgsz), dtype, str(batch), torch.__version__,
                         "fused" if fused else "unfused", f"threads{threads}"])

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> LatencyReport | None:
        """The cached report for ``key``, or ``None``."""
        data = self._load().get(key)
        return LatencyReport.from_dict(data) if data else None

    def put(self, key: str, report: LatencyReport) -> None:
        """Store ``report`` under ``key`` (atomic replace of the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with device_lock("latency-cache", exclusive=True, lock_dir=self.path.parent):
            data = self._load()
            data[key] = report.to_dict()
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.path)


def measure_architecture_latency(arch: Architecture, imgsz: int = 640, device: str = "auto",
                                 dtype: str = "auto", batch: int = 1, nc: int = 80,
                                 cache: LatencyCache | None = None, fused: bool = True,
                                 threads: int = DEFAULT_CPU_THREADS, **kwargs: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``arch`` built untrained and fused (weights do not change latency).

    Returns ``(report, from_cache)``; a cached figure for the same setting is reused.
    """
    from trainers.build import build_model

    dev = resolve_device(device)
    dt = dtype if dtype != "auto" else ("float16" if dev.type == "cuda" else "float32")
    key = LatencyCache.key(arch.hash, device_name(dev), imgsz, dt, batch, fused,
                           threads if dev.type == "cpu" else 0)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    report = measure_latency(build_model(arch, nc=nc), imgsz=imgsz, device=str(dev), dtype=dt, batch=batch,
                             fused=fused, threads=threads, **kwargs)
    if cache is not None:
        cache.put(key, report)
    return report, False
