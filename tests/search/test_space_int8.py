"""The space file's INT8 target: latency.dtype int8 (onnxruntime/openvino), calib_images, INT8 metrics."""

from __future__ import annotations

from typing import Any

import pytest

from search.space.errors import SpaceError
from search.space.schema import parse_space

STAGES: dict[str, Any] = {"p4_backbone": {"block": ["C3k2", "RepViT"]}}


def test_int8_target_parses_with_its_metrics() -> None:
    spec = parse_space({"stages": STAGES, "latency": {"backend": "openvino", "dtype": "int8", "calib_images": 50},
                        "objectives": {"map50_95_int8": "maximize", "latency_ms": "minimize"},
                        "constraints": ["int8_drop <= 1.0"]})
    assert spec.latency.dtype == "int8" and spec.latency.calib_images == 50
    assert spec.objectives[0] == ("map50_95_int8", "maximize") and str(spec.constraints[0]) == "int8_drop <= 1"


def test_calib_images_defaults_to_300() -> None:
    spec = parse_space({"stages": STAGES, "latency": {"backend": "onnxruntime", "dtype": "int8"}})
    assert spec.latency.calib_images == 300


@pytest.mark.parametrize("data, field, match", [
    ({"latency": {"dtype": "int8"}}, "latency.dtype", "int8 needs latency.backend onnxruntime or openvino"),
    ({"objectives": {"map50_95_int8": "maximize"}}, "objectives.map50_95_int8", "needs an INT8 target"),
    ({"constraints": ["int8_drop <= 1"]}, r"constraints\[0\]", "needs an INT8 target"),
    ({"latency": {"backend": "openvino", "dtype": "int8", "calib_images": 0}}, "latency.calib_images", ""),
])
def test_int8_space_errors(data: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(SpaceError, match=f"{field}.*{match}"):
        parse_space({"stages": STAGES, **data}, "bad.yaml")
