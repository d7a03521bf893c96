"""Honest latency of a deployed model, and a cache of figures per architecture and setting.

The timing itself belongs to a backend (:mod:`trainers.latency.backends`): with ``torch`` on
CUDA the fused fp16 forward is captured in a CUDA graph and each replay timed with CUDA events
(eager PyTorch at batch 1 measures Python launch overhead, not the model); on CPU the float32
forward runs with a fixed thread count and enough repeats to report the spread and an interval
of the median. Every report carries its backend, head, device, dtype, batch, image size,
threads, torch version and when it was taken. Measurements hold the device lock exclusively
(see :mod:`trainers.device_lock`).
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
from trainers.heads import DEFAULT_HEAD
from trainers.latency.backends import get_backend
from trainers.latency.report import LatencyReport, LatencySetting

DEFAULT_CPU_THREADS = 1  # one thread: on a small shared CPU, more threads wait on each other and the spread explodes


def measure_latency(model: nn.Module, imgsz: int = 640, device: str = "auto", dtype: str = "auto",
                    batch: int = 1, fused: bool = True, warmup: int | None = None, repeats: int | None = None,
                    threads: int = DEFAULT_CPU_THREADS, min_seconds: float = 1.0, backend: str = "torch",
                    head: str = DEFAULT_HEAD) -> LatencyReport:
    """Measure ``model``'s deployed latency with ``backend`` (``model`` itself is untouched).

    ``fused``: Ultralytics ``fuse()`` + ``blocks.reparameterize_model`` in float32 first, with
    ``head`` pinned; ``False`` measures the training form as is (torch only). ``dtype`` ``auto``:
    float16 on CUDA, float32 on CPU. Raises ``ValueError`` when the backend cannot run here.
    """
    setting = LatencySetting(imgsz, device, dtype, batch, threads, backend, head)
    runner = get_backend(backend)
    if (why := runner.unavailable(setting)) is not None:
        raise ValueError(f"latency backend {backend!r} cannot run here: {why}")
    return runner.measure(model, setting, fused=fused, warmup=warmup, repeats=repeats, min_seconds=min_seconds)


class LatencyCache:
    """Latency reports on disk, keyed by architecture hash and the whole setting (see :meth:`key`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def key(arch_hash: str, device: str, imgsz: int, dtype: str, batch: int, fused: bool = True,
            threads: int = DEFAULT_CPU_THREADS, backend: str = "torch", head: str = DEFAULT_HEAD) -> str:
        """The cache key of one measurement setting (CPU thread count included, 0 on CUDA; backend with its version)."""
        return "|".join([arch_hash, device, str(imgsz), dtype, str(batch), torch.__version__,
                         "fused" if fused else "unfused", f"threads{threads}",
                         f"{backend}-{get_backend(backend).version()}", head])

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
                      threads: int = DEFAULT_CPU_THREADS, backend: str = "torch", head: str = DEFAULT_HEAD) -> str:
    """The cache key of measuring architecture ``arch_hash`` in one setting (device and dtype resolved)."""
    dev = resolve_device(device)
    dt = dtype if dtype != "auto" else ("float16" if dev.type == "cuda" and backend == "torch" else "float32")
    cpu_threads = threads if dev.type == "cpu" or backend != "torch" else 0
    return LatencyCache.key(arch_hash, device_name(dev), imgsz, dt, batch, fused, cpu_threads, backend, head)


def measure_model_latency(model: nn.Module, arch_hash: str, imgsz: int = 640, device: str = "auto",
                          dtype: str = "auto", batch: int = 1, cache: LatencyCache | None = None, fused: bool = True,
                          threads: int = DEFAULT_CPU_THREADS, backend: str = "torch", head: str = DEFAULT_HEAD,
                          **kwargs: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``model``, an already built (untrained) model of architecture ``arch_hash``.

    Returns ``(report, from_cache)``: a cached figure for the same setting is reused, else the
    model is measured (on a fused copy, ``model`` is untouched) and the figure cached.
    """
    key = latency_cache_key(arch_hash, imgsz, device, dtype, batch, fused, threads, backend, head)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    report = measure_latency(model, imgsz=imgsz, device=device, dtype=dtype, batch=batch, fused=fused,
                             threads=threads, backend=backend, head=head, **kwargs)
    if cache is not None:
        cache.put(key, report)
    return report, False


def measure_architecture_latency(arch: Architecture, imgsz: int = 640, device: str = "auto",
                                 dtype: str = "auto", batch: int = 1, nc: int = 80,
                                 cache: LatencyCache | None = None, fused: bool = True,
                                 threads: int = DEFAULT_CPU_THREADS, backend: str = "torch", head: str = DEFAULT_HEAD,
                                 **kwargs: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``arch`` built untrained (weights do not change latency); built only on a cache miss.

    Returns ``(report, from_cache)``.
    """
    from trainers.build import build_model

    key = latency_cache_key(arch.hash, imgsz, device, dtype, batch, fused, threads, backend, head)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    return measure_model_latency(build_model(arch, nc=nc), arch.hash, imgsz, device, dtype, batch, cache, fused,
                                 threads, backend, head, **kwargs)
