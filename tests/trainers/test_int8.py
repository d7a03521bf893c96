"""INT8 targets: post-training quantization through Ultralytics' exporter, timed like the float ones.

Tiny models at 64 px with a few calibration images. Checks that the report says int8, that the
file timed really holds quantized ops, that the cache key names the quantizer, and the refusals.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from trainers.latency.backends import get_backend
from trainers.latency.measure import cache_key, measure_latency
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture
from trainers.model.build import build_model

IMGSZ, NC = 64, 3
FAST: dict[str, Any] = {"warmup": 1, "repeats": 3, "min_seconds": 0.0}
pytestmark = pytest.mark.usefixtures("one_thread", "locks_in_tmp")
NO_OPENVINO = pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf")
                                 is None, reason="openvino + nncf not installed (pip install openvino nncf)")
BACKENDS = ["onnxruntime", pytest.param("openvino", marks=NO_OPENVINO)]
REPO = Path(__file__).resolve().parents[2]


def _int8(backend: str, data: Path, calib_images: int = 4) -> LatencySetting:
    return LatencySetting(imgsz=IMGSZ, device="cpu", dtype="int8", backend=backend, calib_images=calib_images,
                          calib_data=str(data))


def _quantized_ops(path: Path) -> dict[str, int]:
    """Q/DQ nodes and int8 initializers of an ONNX file; FakeQuantize layers and i8/u8 constants of an OpenVINO IR."""
    if path.suffix == ".onnx":
        graph = onnx.load(str(path)).graph
        return {"qdq": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node),
                "int8_tensors": sum(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
                                    for t in graph.initializer)}
    xml = next(path.glob("*.xml")).read_text()
    return {"qdq": xml.count('type="FakeQuantize"'),
            "int8_tensors": xml.count('element_type="i8"') + xml.count('element_type="u8"')}


def _graph_structure(path: Path) -> list[tuple[Any, ...]]:
    """What a runtime's kernels are chosen by: every node's type and wiring (ONNX), every layer's type and port
    precisions (OpenVINO IR); not the constants' values."""
    if path.suffix == ".onnx":
        return [(n.op_type, tuple(n.input), tuple(n.output)) for n in onnx.load(str(path)).graph.node]
    import xml.etree.ElementTree as ET

    layers = ET.parse(next(path.glob("*.xml"))).getroot().find("layers")
    return [(la.get("type"), tuple(p.get("precision") or p.get("element_type") or "" for p in la.iter("port")))
            for la in layers]


@pytest.mark.parametrize("backend", BACKENDS)
def test_int8_latency_reports_int8(backend: str, coco8_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainers.deploy.quantize as quantize
    import trainers.latency.onnx_backends as onnx_backends

    asked: list[int] = []
    real = quantize.quantized_export
    monkeypatch.setattr(quantize, "quantized_export",
                        lambda model, folder, b, s: asked.append(s.calib_images) or real(model, folder, b, s))
    monkeypatch.setattr(onnx_backends, "LATENCY_CALIB_IMAGES", 2)
    model = build_model(Architecture.baseline(), nc=NC)
    setting = _int8(backend, coco8_copy)
    report = measure_latency(model, setting, **FAST)
    assert asked == [2]  # the timed model is calibrated on the probe's few images, not the setting's 4
    assert report.dtype == "int8" and report.backend == backend
    assert report.n >= 3 and report.median_ms > 0
    assert "/int8/" in report.target and report.target == setting.target
    assert "int8" in report.one_line() and "int8" in report.conditions()


QUANTIZER_LINES = {"openvino": ["INFO:nncf:", "Statistics collection"], "onnxruntime": ["WARNING:root:"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantized_export_holds_quantized_ops(backend: str, coco8_copy: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from trainers.deploy.quantize import quantized_export

    model = build_model(Architecture.baseline(), nc=NC)
    path, used = quantized_export(model, tmp_path, backend, _int8(backend, coco8_copy, calib_images=3))
    assert used == 3  # the first 3 training images, as asked
    listed = (tmp_path / "calibration" / "calibration.txt").read_text().splitlines()
    assert len(listed) == 3 and all("train" in line for line in listed)
    ops = _quantized_ops(path)
    assert ops["qdq"] > 50 and ops["int8_tensors"] > 50, ops
    # what the latency probe relies on: fewer calibration images change constants, never the graph timed
    fewer, _ = quantized_export(model, tmp_path / "one", backend, _int8(backend, coco8_copy, calib_images=1))
    assert len(_graph_structure(path)) > 100 and _graph_structure(fewer) == _graph_structure(path)
    log = (tmp_path / "exporter.log").read_text()  # the quantizer's own lines are kept there, not printed
    assert all(line in log for line in QUANTIZER_LINES[backend]), log[:2000]
    leaked = [r.getMessage() for r in caplog.records if "onnxruntime" in r.pathname or r.name == "nncf"]
    assert leaked == []


@NO_OPENVINO
def test_one_openvino_quantization_prints_only_the_clis_json_line(coco8_copy: Path, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(Architecture.baseline().to_json())
    done = subprocess.run([sys.executable, "-m", "trainers.latency", "--arch", str(arch), "--imgsz", "64", "--device",
                           "cpu", "--threads", "1", "--nc", str(NC), "--backend", "openvino", "--dtype", "int8",
                           "--calib-data", str(coco8_copy), "--calib-images", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert len(out) == 1 and json.loads(out[0])["dtype"] == "int8", done.stdout[:3000]  # the CLI's one JSON line
    noise = ("nncf", "Statistics collection", "Fast Bias", "━", "No CUDA runtime", "torch.jit.trace")
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in noise)], done.stderr[-3000:]


def test_calibration_takes_the_whole_split_when_smaller(coco8_copy: Path, tmp_path: Path) -> None:
    from trainers.deploy.quantize import calibration_data

    _, used = calibration_data(coco8_copy, 300, tmp_path)
    _, again = calibration_data(coco8_copy, 300, tmp_path / "again")
    assert 0 < used < 300 and used == again
    assert (tmp_path / "calibration.txt").read_text() == (tmp_path / "again" / "calibration.txt").read_text()


def test_int8_cache_key_names_the_quantizer(coco8_copy: Path) -> None:
    key = cache_key(_int8("onnxruntime", coco8_copy), "abc")
    assert "|int8|" in key and "ultralytics-" in key and "+onnxruntime-" in key and key.endswith("calib4")
    other = cache_key(_int8("onnxruntime", coco8_copy, calib_images=8), "abc")
    float_key = cache_key(LatencySetting(imgsz=IMGSZ, device="cpu", backend="onnxruntime"), "abc")
    assert len({key, other, float_key}) == 3 and "ultralytics" not in float_key


def test_torch_refuses_int8(coco8_copy: Path) -> None:
    setting = LatencySetting(imgsz=IMGSZ, device="cpu", dtype="int8", backend="torch", calib_data=str(coco8_copy))
    assert "no INT8 path" in (get_backend("torch").unavailable(setting) or "")
    with pytest.raises(ValueError, match="torch.*no INT8 path"):
        measure_latency(build_model(Architecture.baseline(), nc=NC), setting, **FAST)


def test_int8_without_calibration_is_refused() -> None:
    setting = LatencySetting(imgsz=IMGSZ, device="cpu", dtype="int8", backend="onnxruntime")
    assert "needs calibration images" in (get_backend("onnxruntime").unavailable(setting) or "")
    missing = LatencySetting(imgsz=IMGSZ, device="cpu", dtype="int8", backend="onnxruntime", calib_data="/nope.yaml")
    assert "not found" in (get_backend("onnxruntime").unavailable(missing) or "")


@pytest.mark.parametrize("extra, match", [
    (["--backend", "torch"], "--dtype int8 needs --backend onnxruntime or openvino"),
    (["--backend", "onnxruntime"], "--dtype int8 needs --calib-data"),
])
def test_latency_cli_refuses_int8_in_one_line(extra: list[str], match: str, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(Architecture.baseline().to_json())
    done = subprocess.run([sys.executable, "-m", "trainers.latency", "--arch", str(arch), "--imgsz", "64",
                           "--dtype", "int8", *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and match in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_int8_accuracy_validates_float_and_int8_exports_alike(coco8_copy: Path, tmp_path: Path) -> None:
    from trainers.deploy.quantize import Int8Accuracy, int8_accuracy

    model = build_model(Architecture.baseline(), nc=NC)
    acc = int8_accuracy(model, _int8("onnxruntime", coco8_copy), coco8_copy, tmp_path)
    assert Path(acc.float_path).name == "model.onnx" and Path(acc.int8_path).name == "model_int8.onnx"
    assert Path(acc.float_path).is_file() and _quantized_ops(Path(acc.int8_path))["qdq"] > 50
    assert 0.0 <= acc.map50_95_int8 <= 1.0 and 0.0 <= acc.map50_95_float <= 1.0
    assert acc.int8_drop == round(100 * (acc.map50_95_float - acc.map50_95_int8), 4)
    assert acc.metrics == {"map50_95_int8": acc.map50_95_int8, "int8_drop": acc.int8_drop}
    assert Int8Accuracy.from_dict(acc.to_dict()) == acc and acc.quantizer.startswith("ultralytics-")


def test_trial_result_carries_int8_metrics() -> None:
    from trainers.train.results import TrialResult, TrialSettings

    settings = TrialSettings(data="d.yaml", out="o", latency=LatencySetting(dtype="int8", backend="openvino"))
    assert settings.latency.calib_data == "d.yaml"  # an INT8 target calibrates on the trial's train split
    assert TrialSettings.from_dict(settings.to_dict()) == settings
    report = measure_stub()
    result = TrialResult("h", {}, 0.5, 0.6, 1, 1.0, report, 1.0, "w", "cpu", 1,
                         int8={"map50_95_int8": 0.48, "int8_drop": 2.0})
    assert result.int8_metrics == {"map50_95_int8": 0.48, "int8_drop": 2.0}
    assert TrialResult.from_dict(result.to_dict()).int8_metrics == result.int8_metrics


def measure_stub() -> Any:
    from trainers.latency.report import LatencyReport

    return LatencyReport(median_ms=1.0, p90_ms=1.0, mean_ms=1.0, cv=0.0, n=1, mode="eager", device="cpu",
                         dtype="int8", batch=1, imgsz=IMGSZ, threads=1, torch="x", fused=True)
