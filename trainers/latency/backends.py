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

from typing import Any

import torch

from trainers.latency._base import LatencyBackend, deployed_copy, nms_candidates_note, resolved_dtype
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.heads import DeployedDetector, post_processing
from trainers.train.devices import resolve_device

__all__ = ["LatencyBackend", "PreparedTorchModel", "TorchBackend", "backends", "deployed_copy", "get_backend",
           "nms_candidates_note", "resolved_dtype"]


class TorchBackend(LatencyBackend):
    """PyTorch: CUDA-graph replay of the fp16 model on GPU, eager float32 with fixed threads on CPU."""

    name = "torch"

    def version(self) -> str:
        """torch's version."""
        return str(torch.__version__)

    def unavailable(self, setting: LatencySetting) -> str | None:
        """A CUDA device on a machine without CUDA, or dtype int8 (eager PyTorch has no INT8 path) are out of reach."""
        if setting.dtype == "int8":
            return "the torch backend has no INT8 path (eager PyTorch); use latency backend onnxruntime or openvino"
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
        from trainers.latency.timing import time_cpu, time_cuda
        from trainers.train.device_lock import device_lock

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
