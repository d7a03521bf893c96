"""Latency reports: ``measure_latency`` on a tiny model, the cache, and ``python -m trainers.latency``.

Timing values are checked for consistency (positive, ordered, counted), never against a
speed: the test machine is shared.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trial_helpers import run_module

from trainers.latency.measure import LatencyCache, measure_architecture_latency, measure_latency
from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import build_model

IMGSZ = 64
REPEATS = 5
FAST: dict[str, Any] = {"warmup": 1, "repeats": REPEATS, "min_seconds": 0.0}  # quick on 2 shared cores
REPORT_KEYS = {f.name for f in fields(LatencyReport)}


@pytest.fixture(autouse=True)
def _locks_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks under ``tmp_path``, not ``studies/.locks`` of the current directory."""
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """The stock YOLO26n with 3 classes, training form."""
    return build_model(Architecture.baseline(), nc=3)


def _assert_consistent(report: LatencyReport, repeats: int) -> None:
    assert 0 < report.median_ms <= report.p90_ms
    assert report.mean_ms > 0 and report.cv >= 0
    assert report.n >= repeats
    assert report.mode == "eager"  # CPU: no CUDA graph
    assert "cpu" in report.device
    assert (report.dtype, report.batch, report.imgsz) == ("float32", 1, IMGSZ)
    assert report.torch == torch.__version__
    assert LatencyReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    assert report.label().startswith(f"{report.median_ms:.2f} ms median")


def test_one_line_and_conditions_name_every_condition_in_words() -> None:
    report = LatencyReport(median_ms=112.0599, p90_ms=115.0, mean_ms=112.5, cv=0.01, n=60, mode="eager",
                           device="cpu (x86_64, 2 cores)", dtype="float32", batch=1, imgsz=640, threads=1,
                           torch="2.14.1", fused=True, head="nms_free", ci_low_ms=111.3, ci_high_ms=113.1)
    assert report.one_line() == "112.1 ms +/- 0.9 (cpu, float32, 640 px, 1 thread)"
    assert report.conditions() == ("torch eager fused, cpu (x86_64, 2 cores), float32, batch 1, 640 px, 1 thread, "
                                   "head nms_free")
    gpu = LatencyReport.from_dict({**report.to_dict(), "device": "NVIDIA H200", "dtype": "float16", "threads": 4,
                                   "backend": "onnxruntime", "ci_low_ms": None, "ci_high_ms": None})
    assert gpu.one_line() == "112.1 ms (NVIDIA H200, float16, 640 px, 4 threads, onnxruntime)"  # no interval: no +/-


def test_fused_report_has_every_field_and_leaves_the_model_alone(tiny: nn.Module) -> None:
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    threads, training = torch.get_num_threads(), tiny.training
    report = measure_latency(tiny, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), **FAST)
    _assert_consistent(report, REPEATS)
    assert report.fused is True and report.threads == 1
    assert torch.get_num_threads() == threads  # the thread count is restored
    # the model measured was a copy: still the training form, same weights, same mode
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())
    assert tiny.training == training
    assert tiny.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in tiny.state_dict().items())


def test_unfused_report_says_so(tiny: nn.Module) -> None:
    report = measure_latency(tiny, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), fused=False, **FAST)
    _assert_consistent(report, REPEATS)
    assert report.fused is False


def test_cpu_repeats_until_min_seconds(tiny: nn.Module) -> None:
    """With ``min_seconds`` the CPU loop goes past ``repeats`` (up to 10x) so the spread is measured."""
    report = measure_latency(
        tiny, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), warmup=1, repeats=3, min_seconds=0.5
    )
    assert 3 <= report.n <= 30
    assert report.n == 30 or report.n * report.mean_ms >= 0.5e3 * 0.9


def test_cuda_device_without_cuda_is_a_value_error(tiny: nn.Module) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        measure_latency(tiny, LatencySetting(imgsz=IMGSZ, device="cuda:0"), **FAST)


def test_architecture_latency_is_cached_per_setting(tmp_path: Path) -> None:
    arch = Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=(3,))})
    cache = LatencyCache(tmp_path / "cache" / "latency.json")
    first, hit = measure_architecture_latency(
        arch, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), nc=3, cache=cache, **FAST
    )
    assert hit is False
    _assert_consistent(first, REPEATS)
    again, hit = measure_architecture_latency(
        arch, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), nc=3, cache=cache, **FAST
    )
    assert hit is True and again == first
    # another image size, or the unfused form, is another setting: measured, not looked up
    other, hit = measure_architecture_latency(
        arch, LatencySetting(imgsz=2 * IMGSZ, device="cpu", threads=1), nc=3, cache=cache, **FAST
    )
    assert hit is False and other.imgsz == 2 * IMGSZ
    unfused, hit = measure_architecture_latency(
        arch, LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), nc=3, cache=cache, fused=False, **FAST
    )
    assert hit is False and unfused.fused is False
    stored = json.loads(cache.path.read_text())
    assert len(stored) == 3 and all(k.startswith(arch.hash + "|") for k in stored)
    # a new cache object on the same file (another process) sees the figure
    assert measure_architecture_latency(
        arch, LatencySetting(imgsz=IMGSZ, device="cpu"), nc=3, cache=LatencyCache(cache.path), **FAST
    ) == (first, True)


def test_corrupt_cache_file_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "latency.json")
    cache.path.write_text("{truncated")
    report, hit = measure_architecture_latency(
        Architecture.baseline(), LatencySetting(imgsz=IMGSZ, device="cpu", threads=1), nc=3, cache=cache, **FAST
    )
    assert hit is False
    assert list(json.loads(cache.path.read_text()).values()) == [report.to_dict()]


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_module("trainers.latency", *args, cwd=cwd, timeout=timeout)


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    """One architecture JSON line, as ``search.space sample`` writes it."""
    path = tmp_path / "arch.json"
    arch = Architecture.create({"p4_backbone": StageChoice(block="OREPA", downsample="RepConv")})
    path.write_text(arch.to_json() + "\n")
    return path


def test_cli_prints_one_json_report(tmp_path: Path, arch_file: Path) -> None:
    proc = _cli(
        "--arch", str(arch_file), "--imgsz", str(IMGSZ), "--device", "cpu", "--threads", "1", "--unfused", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # Ultralytics' log went to stderr
    data = json.loads(lines[0])
    assert set(data) == REPORT_KEYS
    report = LatencyReport.from_dict(data)
    _assert_consistent(report, 20)  # the default CPU repeats
    assert report.fused is False and report.threads == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arch", "missing.json"), "no such file 'missing.json'"),
        (("--imgsz", "50"), "--imgsz must be a multiple of 32, got 50"),
        (("--imgsz", "16"), "--imgsz must be an integer in [32, 4096], got 16"),
        (("--device", "tpu"), "--device must be"),
        (("--dtype", "int4"), "invalid choice: 'int4'"),
        (("--bad-json",), "not a JSON architecture line"),
        (("--unknown-block",), "block must be one of"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, arch_file: Path, args: tuple[str, ...], message: str
) -> None:
    if args == ("--bad-json",):
        arch_file.write_text("not json at all\n")
        args = ()
    elif args == ("--unknown-block",):
        arch_file.write_text(json.dumps({"stages": {"p3_backbone": {"block": "Transformer"}}}) + "\n")
        args = ()
    given = {"--arch": str(arch_file), "--imgsz": str(IMGSZ), **dict(zip(args[::2], args[1::2]))}
    proc = _cli(*[x for kv in given.items() for x in kv], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_cuda_without_cuda_exits_2_with_one_line(tmp_path: Path, arch_file: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _cli("--arch", str(arch_file), "--imgsz", str(IMGSZ), "--device", "cuda", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: device 'cuda' asked for but CUDA is not available"]
