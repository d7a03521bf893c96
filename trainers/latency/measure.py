"""Honest latency of a deployed model, and a cache of figures per architecture and setting.

The timing itself belongs to a backend (:mod:`trainers.latency.backends`): with ``torch`` on
CUDA the fused fp16 forward is captured in a CUDA graph and each replay timed with CUDA events
(eager PyTorch at batch 1 measures Python launch overhead, not the model); on CPU the float32
forward runs with a fixed thread count and enough repeats to report the spread and an interval
of the median. Every report carries its backend, head, device, dtype, batch, image size,
threads, torch version and when it was taken. Measurements hold the device lock exclusively
(see :mod:`trainers.train.device_lock`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from trainers.latency.backends import get_backend
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture
from trainers.train.device_lock import device_lock


def measure_latency(model: nn.Module, setting: LatencySetting, fused: bool = True, warmup: int | None = None,
                    repeats: int | None = None, min_seconds: float = 1.0) -> LatencyReport:
    """Measure ``model``'s deployed latency in ``setting`` (``model`` itself is untouched).

    ``fused``: Ultralytics ``fuse()`` + ``blocks.reparameterize_model`` in float32 first, with the
    setting's head pinned; ``False`` measures the training form as is (torch only). Raises
    ``ValueError`` when the setting's backend cannot run here.
    """
    runner = get_backend(setting.backend)
    if (why := runner.unavailable(setting)) is not None:
        raise ValueError(f"latency backend {setting.backend!r} cannot run here: {why}")
    return runner.measure(model, setting, fused=fused, warmup=warmup, repeats=repeats, min_seconds=min_seconds)


def cache_key(setting: LatencySetting, arch_hash: str, fused: bool = True) -> str:
    """The cache key of ``arch_hash`` in ``setting``, with the version of the backend installed here."""
    return setting.cache_key(arch_hash, get_backend(setting.backend).version(), fused)


class LatencyCache:
    """Latency reports on disk, keyed by :func:`cache_key` (architecture hash and the whole setting)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

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


def measure_model_latency(model: nn.Module, arch_hash: str, setting: LatencySetting,
                          cache: LatencyCache | None = None, fused: bool = True,
                          **timing: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``model``, an already built (untrained) model of architecture ``arch_hash``.

    Returns ``(report, from_cache)``: a cached figure for the same setting is reused, else the
    model is measured (on a fused copy, ``model`` is untouched) and the figure cached. ``timing``:
    ``warmup``, ``repeats``, ``min_seconds`` of :func:`measure_latency`.
    """
    key = cache_key(setting, arch_hash, fused)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit, True
    report = measure_latency(model, setting, fused=fused, **timing)
    if cache is not None:
        cache.put(key, report)
    return report, False


def measure_architecture_latency(arch: Architecture, setting: LatencySetting, nc: int = 80,
                                 cache: LatencyCache | None = None, fused: bool = True,
                                 **timing: Any) -> tuple[LatencyReport, bool]:
    """Latency of ``arch`` built untrained (weights do not change latency); built only on a cache miss.

    Returns ``(report, from_cache)``.
    """
    from trainers.model.build import build_model

    if cache is not None and (hit := cache.get(cache_key(setting, arch.hash, fused))) is not None:
        return hit, True
    return measure_model_latency(build_model(arch, nc=nc), arch.hash, setting, cache, fused, **timing)
