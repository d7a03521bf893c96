"""Latency through ONNX runtimes: the fused detector exported to ONNX, then timed by ONNX Runtime or OpenVINO.

The ONNX file is made the way ``search.export`` makes it (:func:`trainers.deploy.onnx_io.export_onnx`:
fused float32 model, head pinned, batch and image size fixed). Only the fused form is measured
(``fused=False`` raises). CPU runs use a fixed intra-op thread count (one inter-op thread,
sequential execution). With the ``nms`` head, NMS runs in PyTorch on the runtime's output (it
is not part of the ONNX graph), on the same device, with torch held at the same thread count.

OpenVINO's CPU plugin runs in bfloat16 by default on CPUs with AVX512_BF16 or AMX (measured on
an AMD EPYC here: 1.7x faster than float32 on the stock YOLO26n at 320 px). The backend pins
``INFERENCE_PRECISION_HINT=f32`` and checks the compiled model kept it, so its figure is the
float32 export's, like the other backends'. CPU pinning is off (``ENABLE_CPU_PINNING=False``):
torch and ONNX Runtime are not pinned either, and a thread pinned to a core another job uses
waits for it.

``dtype: int8``: the model is quantized post-training by Ultralytics' exporter on the setting's
calibration images (:mod:`trainers.deploy.quantize`) and that file is timed by the same loop; the
report's dtype says ``int8``. :meth:`prepare` exports (and quantizes) once, so interleaved
measurements time bursts of one prepared runtime instead of re-quantizing per burst. The timed model is
calibrated on at most :data:`LATENCY_CALIB_IMAGES` of the setting's images: calibration sets scales, zero
points and (NNCF) bias corrections, never which operators run in which precision, so the graph timed is
the one a full calibration gives (``tests/trainers/test_int8.py`` compares them); accuracy
(:func:`trainers.deploy.quantize.int8_accuracy`) calibrates on all of them.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.latency._base import LatencyBackend, deployed_copy, nms_candidates_note
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.heads import DeployedDetector, post_processing
from trainers.train.devices import resolve_device

LATENCY_CALIB_IMAGES = 8
"""Calibration images of the INT8 model a latency probe times (fewer when the setting asks fewer); a trial's
INT8 accuracy calibrates on the setting's full count. 8 instead of 300: 9 s instead of 39 s per probe
(OpenVINO, stock YOLO26n, 640 px, 1 thread)."""


def _check_fused(backend: str, fused: bool) -> None:
    """``ValueError`` unless ``fused``: an ONNX backend measures the fused export only."""
    if not fused:
        raise ValueError(f"the {backend} backend measures the fused export, got fused=False (unfused: torch only)")


def _cpu_only(backend: str, setting: LatencySetting) -> str | None:
    """Why ``backend`` (CPU only) cannot measure ``setting``'s device, or ``None`` when it resolves to the CPU."""
    try:
        dev = resolve_device(setting.device)
    except ValueError as e:
        return str(e)
    if dev.type != "cpu":
        return f"the {backend} backend measures on the CPU, got device {setting.device!r} (resolves to {dev})"
    return None


def _export_mismatch(backend: str, setting: LatencySetting) -> str | None:
    """Why the export (float32 or INT8, batch 1) is not what ``setting`` asks for, or ``None``."""
    if setting.dtype not in ("auto", "float32", "int8"):
        return f"the {backend} backend measures the float32 or int8 export, got dtype {setting.dtype!r}"
    if setting.batch != 1:
        return f"the {backend} backend measures the batch-1 export, got batch {setting.batch}"
    if setting.dtype == "int8":
        from trainers.deploy.quantize import quantizer_missing

        return setting.int8_problem() or quantizer_missing(backend)
    return None


def _export(model: Any, setting: LatencySetting, folder: Path) -> tuple[Path, DeployedDetector]:
    """The deployed form of ``model`` as ``folder/model.onnx`` (float32) or the INT8 export of Ultralytics'
    exporter (``dtype: int8``), and as a torch detector (for post-processing)."""
    from trainers.deploy.onnx_io import export_onnx

    detector = DeployedDetector(deployed_copy(model, setting.head), setting.head)
    if setting.dtype == "int8":
        from trainers.deploy.quantize import quantized_export

        probe = replace(setting, calib_images=min(setting.calib_images, LATENCY_CALIB_IMAGES))
        return quantized_export(model, folder, setting.backend, probe)[0], detector
    path = export_onnx(detector.model, folder / "model.onnx", setting.imgsz)
    return path, detector


def _timed_dtype(setting: LatencySetting) -> torch.dtype:
    """What the report's dtype says: int8 for a quantized export, else float32."""
    return torch.int8 if setting.dtype == "int8" else torch.float32


class PreparedRuntime:
    """An exported model opened in its runtime, with its input and post-processing, timed burst after burst."""

    def __init__(self, backend: LatencyBackend, setting: LatencySetting, run: Any, detector: DeployedDetector,
                 mode: str):
        self.backend, self.setting, self.run, self.mode = backend, setting, run, mode
        self.dev = resolve_device(setting.device) if backend.name == "onnxruntime" else torch.device("cpu")
        x = torch.rand(setting.batch, 3, setting.imgsz, setting.imgsz)
        self.post_fn = _post(detector, self.dev)
        self.post = post_processing(setting.head) + nms_candidates_note(detector, x)

    def burst(self, warmup: int, repeats: int, min_seconds: float = 0.0) -> LatencyReport:
        """``warmup`` untimed then ``repeats`` timed runs (more until ``min_seconds``), holding the device lock."""
        from trainers.train.device_lock import device_lock

        with device_lock(str(self.dev), exclusive=True):
            times = _time_runs(self.run, self.post_fn, warmup, repeats, min_seconds, self.setting.threads)
        return self.backend.report(times, self.mode, self.setting, self.dev, _timed_dtype(self.setting), True,
                                   self.post, self.setting.threads)


def _time_runs(run: Any, post: Any, warmup: int, repeats: int, min_seconds: float, threads: int) -> list[float]:
    """Milliseconds of ``post(run())`` calls: ``warmup`` untimed, ``repeats`` timed (more until ``min_seconds``).

    torch (the ``nms`` head's post-processing) runs with ``threads`` threads meanwhile.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                post(run())
            times: list[float] = []
            begin = time.perf_counter()
            while len(times) < repeats or (time.perf_counter() - begin < min_seconds and len(times) < 10 * repeats):
                t0 = time.perf_counter()
                post(run())
                times.append(1e3 * (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(old)
    return times


def _post(detector: DeployedDetector, dev: torch.device) -> Any:
    """The head's post-processing applied to a runtime's numpy outputs (on ``dev``, as a deployment would)."""
    if detector.head == "nms_free":
        return lambda out: out
    return lambda out: detector.postprocess(torch.from_numpy(out[0]).to(dev))


class _RuntimePackageBackend(LatencyBackend):
    """A backend whose runtime is the Python package :attr:`name` (imported only when used)."""

    def version(self) -> str:
        """The runtime package's version, or ``missing``."""
        try:
            module = importlib.import_module(self.name)
        except ImportError:
            return "missing"
        return str(module.__version__)

    def missing(self) -> str | None:
        """Why the runtime package cannot be imported, or ``None``."""
        try:
            importlib.import_module(self.name)
        except ImportError:
            return f"{self.name} is not installed (pip install {self.name})"
        return None


class OnnxRuntimeBackend(_RuntimePackageBackend):
    """ONNX Runtime: the CPU provider with fixed intra-op threads, the CUDA provider on a GPU when installed."""

    name = "onnxruntime"

    def unavailable(self, setting: LatencySetting) -> str | None:
        """Missing package, a CUDA device without the CUDA provider, a dtype other than float32 or a batch over 1."""
        if (why := self.missing()) is not None:
            return why
        import onnxruntime

        try:
            dev = resolve_device(setting.device)
        except ValueError as e:
            return str(e)
        if dev.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)"
        return _export_mismatch(self.name, setting)

    def measure(self, model: Any, setting: LatencySetting, fused: bool = True, warmup: int | None = None,
                repeats: int | None = None, min_seconds: float = 1.0) -> LatencyReport:
        """Export (INT8: quantize), open a session with ``setting.threads`` intra-op threads, time ``session.run``
        (+ NMS). On CUDA the timed call includes copying the input to the GPU and the output back."""
        return self.prepare(model, setting, fused).burst(warmup or 3, repeats or 20, min_seconds)

    def prepare(self, model: Any, setting: LatencySetting, fused: bool = True) -> PreparedRuntime:
        """Export (INT8: quantize) once and open the session: ready for bursts."""
        import onnxruntime as ort

        _check_fused(self.name, fused)
        dev = resolve_device(setting.device)
        with tempfile.TemporaryDirectory() as tmp:
            path, detector = _export(model, setting, Path(tmp))
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = setting.threads, 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            providers = ["CUDAExecutionProvider"] if dev.type == "cuda" else ["CPUExecutionProvider"]
            session = ort.InferenceSession(str(path), options, providers=providers)
        if session.get_providers()[0] != providers[0]:  # ORT falls back to the CPU when CUDA libraries fail to load
            raise ValueError(f"onnxruntime could not start {providers[0]}, it runs on {session.get_providers()}")
        feed = {"images": torch.rand(setting.batch, 3, setting.imgsz, setting.imgsz).numpy().astype(np.float32)}
        return PreparedRuntime(self, setting, lambda: session.run(None, feed), detector, "session")


def openvino_cpu_config(threads: int) -> dict[str, Any]:
    """OpenVINO CPU plugin properties: latency hint, one stream, ``threads`` threads, float32, no pinning."""
    return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}


class OpenVINOBackend(_RuntimePackageBackend):
    """OpenVINO on the CPU: :func:`openvino_cpu_config` (float32, latency hint, fixed threads)."""

    name = "openvino"

    def unavailable(self, setting: LatencySetting) -> str | None:
        """Missing package, a device other than the CPU (``auto`` on a CUDA machine), not float32 or not batch 1."""
        return self.missing() or _cpu_only(self.name, setting) or _export_mismatch(self.name, setting)

    def measure(self, model: Any, setting: LatencySetting, fused: bool = True, warmup: int | None = None,
                repeats: int | None = None, min_seconds: float = 1.0) -> LatencyReport:
        """Export (INT8: quantize with NNCF), compile for the CPU (:func:`openvino_cpu_config`), time one infer
        request (+ NMS)."""
        return self.prepare(model, setting, fused).burst(warmup or 3, repeats or 20, min_seconds)

    def prepare(self, model: Any, setting: LatencySetting, fused: bool = True) -> PreparedRuntime:
        """Export (INT8: quantize) once and compile: ready for bursts. The float parts run in f32 (checked)."""
        import openvino as ov

        _check_fused(self.name, fused)
        with tempfile.TemporaryDirectory() as tmp:
            path, detector = _export(model, setting, Path(tmp))
            if path.is_dir():  # Ultralytics' OpenVINO export: a folder holding model.xml
                path = next(path.glob("*.xml"))
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", openvino_cpu_config(setting.threads))
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if "f32" not in precision and "float32" not in precision:
            raise ValueError(f"openvino compiled the model in {precision}, asked for f32")
        request = compiled.create_infer_request()
        feed = torch.rand(setting.batch, 3, setting.imgsz, setting.imgsz).numpy().astype(np.float32)

        def run() -> list[Any]:
            request.infer({0: feed})
            return [request.get_output_tensor(0).data]

        return PreparedRuntime(self, setting, run, detector, "infer_request")
