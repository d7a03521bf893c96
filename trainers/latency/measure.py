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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.architecture import Architecture
from trainers.device_lock import device_lock
from trainers.devices import device_name, resolve_device
from trainers.inference import fused_copy
from trainers.latency.report import LatencyReport
from trainers.latency.timing import summarize, time_cpu, time_cuda

DEFAULT_CPU_THREADS = 1  # one thread: on a small shared CPU, more threads wait on each other and the spread explodes


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
            times, mode = time_cuda(net, x, warmup or 20, repeats or 200)
            used_threads = torch.get_num_threads()
        else:
            old = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                times, mode = time_cpu(net, x, warmup or 3, repeats or 20, min_seconds), "eager"
            finally:
                torch.set_num_threads(old)
            used_threads = threads
    return LatencyReport(**summarize(times), n=len(times), mode=mode, device=device_name(dev),
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


def latency_cache_key(arch_hash: str, imgsz: int, device: str, dtype: str, batch: int = 1, fused: bool = True,
                      threads: int = DEFAULT_CPU_THREADS) -> str:
    """The cache key of measuring architecture ``arch_hash`` in one setting (device and dtype resolved)."""
    dev = resolve_device(device)
    dt = dtype if dtype != "auto" else ("float16" if dev.type == "cuda" else "float32")
    return LatencyCache.key(arch_hash, device_name(dev), imgsz, dt, batch, fused, threads if dev.type == "cpu" else 0)


def measure_model_latency(model: nn.Module, arch_hash: str, imgsz: int = 640, device: str = "auto",
                          dtype: str = "auto", batch: int = 1, cache: LatencyCache | None = None, fused: bool = True,
                          threads: int = DEFAULT_CPU_THREADS, **kwargs: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``model``, an already built (untrained) model of architecture ``arch_hash``.

    Returns ``(report, from_cache)``: a cached figure for the same setting is reused, else the
    model is measured (on a fused copy, ``model`` is untouched) and the figure cached.
    """
    key = latency_cache_key(arch_hash, imgsz, device, dtype, batch, fused, threads)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    report = measure_latency(model, imgsz=imgsz, device=device, dtype=dtype, batch=batch, fused=fused,
                             threads=threads, **kwargs)
    if cache is not None:
        cache.put(key, report)
    return report, False


def measure_architecture_latency(arch: Architecture, imgsz: int = 640, device: str = "auto",
                                 dtype: str = "auto", batch: int = 1, nc: int = 80,
                                 cache: LatencyCache | None = None, fused: bool = True,
                                 threads: int = DEFAULT_CPU_THREADS, **kwargs: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``arch`` built untrained (weights do not change latency); built only on a cache miss.

    Returns ``(report, from_cache)``.
    """
    from trainers.build import build_model

    key = latency_cache_key(arch.hash, imgsz, device, dtype, batch, fused, threads)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    return measure_model_latency(build_model(arch, nc=nc), arch.hash, imgsz, device, dtype, batch, cache, fused,
                                 threads, **kwargs)
