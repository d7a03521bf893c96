"""How latency is asked for: one frozen :class:`LatencySetting`, the only type of it in the project.

The space file's ``latency:`` section, a trial's settings, the latency cache, the interleaved
re-measure and export all carry this object. ``auto`` values (device, dtype) are resolved once by
:meth:`LatencySetting.resolve`; :attr:`LatencySetting.target` names the setting the way studies file
their figures (``latency@<target>``) and :meth:`LatencySetting.cache_key` keys the cache.
Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from trainers.latency.report import target_name

BACKEND_NAMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")  # trainers.latency.backends.backends() keys
DTYPES: tuple[str, ...] = ("auto", "float16", "float32", "int8")
INT8_BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")  # post-training INT8 through Ultralytics' exporter
DEFAULT_CALIB_IMAGES = 300


@dataclass(frozen=True)
class LatencySetting:
    """How to measure: deployment size, device, dtype, batch, CPU threads, runtime backend and head.

    ``device``: ``auto``, ``cpu``, ``cuda:N``; ``dtype``: ``auto`` (float16 for torch on CUDA, else
    float32), ``float16``, ``float32`` or ``int8`` (post-training quantized, :data:`INT8_BACKENDS` only;
    see :mod:`trainers.deploy.quantize`); ``threads``: CPU threads of the timed runtime.
    ``calib_images``: INT8 calibration images, the first that many of ``calib_data``'s train split (a data
    YAML; all of it when it has fewer). ``calib_data`` is a trial's own data (set by ``TrialSettings``), so it
    is not part of the cache key; the quantizer, its version and ``calib_images`` are.
    """

    imgsz: int = 640
    device: str = "auto"
    dtype: str = "auto"
    batch: int = 1
    threads: int = 1
    backend: str = "torch"
    head: str = "nms_free"
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_data: str | None = None

    def int8_problem(self) -> str | None:
        """Why this setting cannot be quantized to INT8 (one line), or ``None`` (also when it is not INT8)."""
        if self.dtype != "int8":
            return None
        if self.backend not in INT8_BACKENDS:
            return (f"dtype int8 needs backend {' or '.join(INT8_BACKENDS)}, got backend {self.backend!r} "
                    "(eager PyTorch on the CPU has no INT8 path)")
        if not self.calib_data:
            return "dtype int8 needs calibration images: give a data YAML (its train split calibrates)"
        if not Path(self.calib_data).is_file():
            return f"dtype int8: calibration data YAML {self.calib_data!r} not found"
        return None

    def resolve(self) -> LatencySetting:
        """The same setting with ``auto`` device and dtype made concrete for this machine (imports torch)."""
        from trainers.train.devices import resolve_device

        dev = resolve_device(self.device)
        device = "cpu" if dev.type == "cpu" else f"{dev.type}:{dev.index or 0}"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "float16" if dev.type == "cuda" and self.backend == "torch" else "float32"
        return replace(self, device=device, dtype=dtype)

    @property
    def device_name(self) -> str:
        """The measuring device as reports name it: ``cpu (x86_64, 2 cores)``, ``NVIDIA H100 ...``."""
        from trainers.train.devices import device_name, resolve_device

        return device_name(resolve_device(self.device))

    @property
    def timed_threads(self) -> int:
        """The thread count that decides a CPU figure; 0 where threads do not (torch on CUDA)."""
        return 0 if self.backend == "torch" and self.resolve().device != "cpu" else self.threads

    @property
    def target(self) -> str:
        """The target the backend's reports in this setting will carry (``latency@<target>``): OpenVINO times
        on the CPU and in float32 whatever is asked; torch on CUDA reports torch's own thread count."""
        import torch

        r = self.resolve() if self.backend != "openvino" else replace(self, device="cpu", dtype="float32")
        if r.backend != "torch":
            r = replace(r, dtype="int8" if self.dtype == "int8" else "float32")
        cuda = r.backend == "torch" and r.device != "cpu"
        threads = torch.get_num_threads() if cuda else r.threads
        return target_name(r.backend, r.device_name, r.dtype, r.imgsz, threads, r.head)

    def cache_key(self, arch_hash: str, backend_version: str, fused: bool = True) -> str:
        """The latency cache's key of architecture ``arch_hash`` in this setting, measured by the backend's
        ``backend_version`` (a backend's ``version()``; torch's version is in the key too)."""
        import torch

        r = self.resolve()
        parts = [arch_hash, self.device_name, str(r.imgsz), r.dtype, str(r.batch), torch.__version__,
                 "fused" if fused else "unfused", f"threads{self.timed_threads}", f"{r.backend}-{backend_version}",
                 r.head]
        if r.dtype == "int8":
            from trainers.deploy.quantize import quantizer_id

            parts.append(f"{quantizer_id(r.backend)}-calib{r.calib_images}")
        return "|".join(parts)
