"""What every latency backend shares: the :class:`LatencyBackend` protocol and the deployed form it times.

:mod:`trainers.latency.backends` (torch and the registry) and :mod:`trainers.latency.onnx_backends`
(ONNX Runtime, OpenVINO) both build on this module, so neither imports the other's module at load.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from typing import Any

import torch

from trainers.latency.report import SAMPLES_KEPT, LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.latency.timing import summarize
from trainers.model.heads import DeployedDetector
from trainers.train.devices import device_name


def resolved_dtype(dtype: str, dev: Any) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; else the named dtype."""
    if dtype == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    return {"float16": torch.float16, "float32": torch.float32}[dtype]


def deployed_copy(model: Any, head: str, fused: bool = True) -> Any:
    """A float32 eval copy of ``model``, ``head`` pinned, fused (Ultralytics' and ours) unless ``fused=False``."""
    from trainers.deploy.inference import fused_copy
    from trainers.model.heads import pin_head

    return fused_copy(model, ultralytics_fuse=fused, ours=fused, before_fuse=lambda m: pin_head(m, head))


def nms_candidates_note(detector: DeployedDetector, x: torch.Tensor) -> str:
    """For the ``nms`` head: how many boxes entered NMS and where they came from."""
    if detector.head != "nms":
        return ""
    with torch.no_grad():
        n = detector.candidates(x)
    return f"; {n} candidate boxes from the untrained model on a random image (a trained model's count differs)"


class LatencyBackend(ABC):
    """One deployment runtime that can time a detector."""

    name: str

    @abstractmethod
    def version(self) -> str:
        """The runtime's version (part of the cache key)."""

    @abstractmethod
    def unavailable(self, setting: LatencySetting) -> str | None:
        """Why this backend cannot measure ``setting`` on this machine, or ``None`` when it can."""

    @abstractmethod
    def measure(self, model: Any, setting: LatencySetting, fused: bool = True, warmup: int | None = None,
                repeats: int | None = None, min_seconds: float = 1.0) -> LatencyReport:
        """Time the deployed form of ``model`` (an untrained or trained training-form detector; left untouched)."""

    def report(self, times: list[float], mode: str, setting: LatencySetting, dev: Any, dtype: torch.dtype,
               fused: bool, post: str, threads: int) -> LatencyReport:
        """The report of ``times`` measured in ``setting`` on ``dev``."""
        stats = summarize(times)
        keep = tuple(round(t, 4) for t in times[-SAMPLES_KEPT:])
        return LatencyReport(**stats, n=len(times), mode=mode, device=device_name(dev),
                             dtype=str(dtype).replace("torch.", ""), batch=setting.batch, imgsz=setting.imgsz,
                             threads=threads, torch=torch.__version__, fused=fused, backend=self.name,
                             backend_version=self.version(), head=setting.head, post=post,
                             measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             samples=keep)
