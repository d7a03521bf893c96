"""search.export with an INT8 target: the quantized model beside the float one, checked by mAP drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.export import ExportPlan, int8_check, int8_files
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture
from trainers.model.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _plan(data: Path | None) -> ExportPlan:
    setting = LatencySetting(imgsz=64, device="cpu", dtype="int8", backend="onnxruntime", calib_images=4,
                             calib_data=str(data) if data else None)
    return ExportPlan(imgsz=64, val_imgsz=64, head="nms_free", data=str(data) if data else None,
                      weights=Path("best.pt"), setting=setting)


def test_int8_check_writes_beside_float_and_compares_map(coco8_copy: Path, tmp_path: Path) -> None:
    model = build_model(Architecture.baseline(), nc=3)
    check, int8 = int8_check(model, _plan(coco8_copy), tmp_path, max_drop=1.0)
    assert int8 is not None and (tmp_path / "model_int8.onnx").is_file() and (tmp_path / "model.onnx").is_file()
    assert check["drop_points"] == int8["int8_drop"] and check["ok"] == (int8["int8_drop"] <= 1.0)
    assert "drop" in check["detail"] and "calibration images" in check["detail"]
    assert set(int8_files(tmp_path, int8)) == {"model_int8.onnx", "model.onnx"}
    strict, _ = int8_check(model, _plan(coco8_copy), tmp_path / "again", max_drop=-1.0)
    assert not strict["ok"]  # a limit below any drop fails the check


def test_int8_check_without_data_fails_the_check(tmp_path: Path) -> None:
    check, int8 = int8_check(build_model(Architecture.baseline(), nc=3), _plan(None), tmp_path, max_drop=1.0)
    assert int8 is None and not check["ok"] and "give --data" in check["detail"]
