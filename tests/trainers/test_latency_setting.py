"""The one latency setting (:mod:`trainers.latency.setting`): resolved once, named once, keyed once."""

from __future__ import annotations

import torch

from trainers.latency.measure import cache_key
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.train.devices import device_name


def test_resolve_makes_auto_concrete_and_keeps_the_rest() -> None:
    s = LatencySetting(imgsz=96, device="cpu", threads=3, backend="onnxruntime", head="nms").resolve()
    assert s == LatencySetting(imgsz=96, device="cpu", dtype="float32", threads=3, backend="onnxruntime", head="nms")
    assert LatencySetting(device="cpu", dtype="float16").resolve().dtype == "float16"  # asked for: kept
    assert s.resolve() == s  # resolving twice changes nothing


def test_cache_key_is_the_format_caches_were_written_in() -> None:
    """Caches written before this type existed must still hit: the key is spelt as it always was."""
    name = device_name(torch.device("cpu"))
    key = LatencySetting(imgsz=64, device="cpu", threads=2, head="nms").cache_key("abc", "9.9")
    assert key == f"abc|{name}|64|float32|1|{torch.__version__}|fused|threads2|torch-9.9|nms"
    assert LatencySetting(device="cpu").cache_key("abc", "9.9", fused=False).split("|")[6] == "unfused"
    assert cache_key(LatencySetting(device="cpu"), "abc").split("|")[8] == f"torch-{torch.__version__}"


def test_target_is_the_target_of_the_reports_it_makes() -> None:
    setting = LatencySetting(imgsz=64, device="cpu", threads=1, head="nms_free")
    report = LatencyReport(1.0, 1.0, 1.0, 0.0, 1, "eager", device_name(torch.device("cpu")), "float32", 1, 64, 1,
                           torch.__version__, True, "torch", head="nms_free")
    assert setting.target == report.target
    assert setting.target.startswith("torch/cpu-") and setting.target.endswith("/float32/64/t1/nms_free")
    # OpenVINO times float32 on the CPU whatever is asked
    assert LatencySetting(imgsz=64, device="cpu", dtype="auto", backend="openvino").target.split("/")[2] == "float32"
