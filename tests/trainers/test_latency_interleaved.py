"""Interleaved latency: round-robin bursts in one process, samples pooled per model (tiny models, 64 px)."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pytest

from trainers.latency.interleaved import measure_interleaved, pool_reports, round_order
from trainers.latency.report import SAMPLES_KEPT, LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.latency.timing import median_interval
from trainers.model.architecture import Architecture
from trainers.model.build import build_model

CPU_64 = LatencySetting(imgsz=64, device="cpu", threads=1)


@pytest.fixture(autouse=True)
def _locks_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks under ``tmp_path``, not ``studies/.locks`` of the current directory."""
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))


def _burst(samples: list[float], at: str) -> LatencyReport:
    return LatencyReport(median_ms=statistics.median(samples), p90_ms=max(samples), mean_ms=statistics.fmean(samples),
                         cv=0.0, n=len(samples), mode="eager", device="cpu", dtype="float32", batch=1, imgsz=64,
                         threads=1, torch="x", fused=True, measured_at=at, samples=tuple(samples))


def test_each_round_rotates_the_order_by_one() -> None:
    assert [round_order(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert round_order(0, 5) == []


def test_pooled_report_takes_its_figures_from_every_burst() -> None:
    bursts = [_burst([1.0, 2.0, 3.0], "t1"), _burst([10.0, 11.0, 12.0], "t2"), _burst([4.0, 5.0, 6.0], "t3")]
    pooled = pool_reports(bursts, rounds=3)
    everything = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 4.0, 5.0, 6.0]
    assert pooled.n == 9 and pooled.samples == tuple(everything)
    assert pooled.median_ms == 5.0 and pooled.mean_ms == pytest.approx(6.0)
    assert (pooled.ci_low_ms, pooled.ci_high_ms) == median_interval(everything)
    assert pooled.mode == "eager interleaved x3" and pooled.measured_at == "t3"
    assert pool_reports(bursts, rounds=3, measured_at="t9").measured_at == "t9"


def test_pooled_samples_kept_are_spread_over_every_round() -> None:
    bursts = [_burst([float(r)] * 150, f"t{r}") for r in range(4)]  # 600 samples, 200 kept
    pooled = pool_reports(bursts, rounds=4)
    assert pooled.n == 600 and len(pooled.samples) == SAMPLES_KEPT
    assert set(pooled.samples) == {0.0, 1.0, 2.0, 3.0}


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rounds and repeats must be >= 1"):
        measure_interleaved([], CPU_64, rounds=0)
    with pytest.raises(ValueError, match="latency backend must be one of .*got 'nope'"):
        measure_interleaved([], dataclasses.replace(CPU_64, backend="nope"))


def test_two_copies_of_one_architecture_land_within_each_other_s_interval() -> None:
    arch = Architecture.baseline()
    models = [build_model(arch, nc=3), build_model(arch, nc=3)]
    seen: list[int] = []
    a, b = measure_interleaved(models, CPU_64, rounds=20, repeats=3, warmup=1,
                               on_round=lambda k, total, reports: seen.append(k))
    assert seen == list(range(1, 21))
    for r in (a, b):
        assert r.n == 60 and len(r.samples) == 60 and "interleaved" in r.mode
        assert r.ci_low_ms is not None and r.ci_high_ms is not None and r.ci_low_ms <= r.median_ms <= r.ci_high_ms
    assert a.measured_at == b.measured_at
    assert a.overlaps(b), (a.label(), b.label())
