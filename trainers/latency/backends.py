"""Latency backends behind one seam: how a deployment runtime times a fused detector.

A backend has a ``name``, a ``version()``, says whether it can run here (``unavailable`` returns
why not, or ``None``) and ``measure(model, setting)``s an untrained training-form model: it
makes the deployed form itself (fused copy, head pinned) and returns a :class:`LatencyReport`.
:func:`backends` is the registry the command lines take their choices from.

- ``torch``: eager PyTorch on CPU (fixed thread count, many repeats), the fp16 model replayed
  as a CUDA graph and timed with CUDA events on GPU.
- ``onnxruntime`` / ``openvino``: see :mod:`trainers.latency.onnx_backends`.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from typing import Any

import torch

from trainers.devices import device_name, resolve_device
from trainers.heads import DeployedDetector, post_processing
from trainers.latency.report import SAMPLES_KEPT, LatencyReport, LatencySetting
from trainers.latency.timing import summarize


def resolved_dtype(dtype: str, dev: Any) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; else the named dtype."""
    if dtype == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    return {"float16": torch.float16, "float32": torch.float32}[dtype]


def deployed_copy(model: Any, head: str, fused: bool = True) -> Any:
    """A float32 eval copy of ``model``, ``head`` pinned, fused (Ultralytics' and ours) unless ``fused=False``."""
    from trainers.heads import pin_head
    from trainers.inference import fused_copy

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


class TorchBackend(LatencyBackend):
    """PyTorch: CUDA-graph replay of the fp16 model on GPU, eager float32 with fixed threads on CPU."""

    name = "torch"

    def version(self) -> str:
        """torch's version."""
        return str(torch.__version__)

    def unavailable(self, setting: LatencySetting) -> str | None:
        """Only a CUDA device on a machine without CUDA is out of reach."""
        try:
            resolve_device(setting.device)
        except ValueError as e:
            return str(e)
        return None

    def prepare(self, model: Any, setting: LatencySetting, fused: bool = True) -> PreparedTorchModel:
        """The deployed form of ``model`` on its device in its dtype, ready to be timed burst after burst."""
        return PreparedTorchModel(self, model, setting, fused)

    def measure(self, model: Any, setting: LatencySetting, fused: bool = True, warmup: int | None = None,
                repeats: int | None = None, min_seconds: float = 1.0) -> LatencyReport:
        """Fused copy on the device in its dtype; CUDA graph + events on GPU, ``perf_counter`` on CPU."""
        prepared = self.prepare(model, setting, fused)
        cuda = prepared.dev.type == "cuda"  # defaults: 20 + 200 graph replays on GPU, 3 + 20 forwards on CPU
        return prepared.burst(warmup or (20 if cuda else 3), repeats or (200 if cuda else 20), min_seconds)


class PreparedTorchModel:
    """A deployed torch model (fused copy, head pinned, on its device in its dtype) and its input, timed per burst."""

    def __init__(self, backend: LatencyBackend, model: Any, setting: LatencySetting, fused: bool):
        self.backend, self.setting, self.fused = backend, setting, fused
        self.dev = resolve_device(setting.device)
        self.dtype = resolved_dtype(setting.dtype, self.dev)
        self.detector = DeployedDetector(deployed_copy(model, setting.head, fused).to(self.dev, self.dtype),
                                         setting.head)
        self.x = torch.rand(setting.batch, 3, setting.imgsz, setting.imgsz, device=self.dev, dtype=self.dtype)
        self.post = post_processing(setting.head) + nms_candidates_note(self.detector, self.x)

    def burst(self, warmup: int, repeats: int, min_seconds: float = 0.0) -> LatencyReport:
        """CUDA-graph replays timed with CUDA events on GPU; ``perf_counter`` with fixed threads on CPU."""
        from trainers.device_lock import device_lock
        from trainers.latency.timing import time_cpu, time_cuda

        with device_lock(str(self.dev), exclusive=True):
            if self.dev.type == "cuda":
                times, mode = time_cuda(self.detector, self.x, max(warmup, 1), repeats)
                threads = torch.get_num_threads()
            else:
                old, threads = torch.get_num_threads(), self.setting.threads
                torch.set_num_threads(threads)
                try:
                    times, mode = time_cpu(self.detector, self.x, warmup, repeats, min_seconds), "eager"
                finally:
                    torch.set_num_threads(old)
        return self.backend.report(times, mode, self.setting, self.dev, self.dtype, self.fused, self.post, threads)


def backends() -> dict[str, LatencyBackend]:
    """Every backend by name (the registry; :data:`BACKEND_NAMES` lists the same names without importing them)."""
    from trainers.latency.onnx_backends import OnnxRuntimeBackend, OpenVINOBackend

    return {b.name: b for b in (TorchBackend(), OnnxRuntimeBackend(), OpenVINOBackend())}


def get_backend(name: str) -> LatencyBackend:
    """The backend called ``name``; ``ValueError`` listing the known ones."""
    known = backends()
    if name not in known:
        raise ValueError(f"latency backend must be one of {list(known)}, got {name!r}")
    return known[name]
