"""Shared by the trial tests: the architectures, image size, a stand-in latency report and a trial's record."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture, StageChoice
from trainers.train.results import TrialFailure, TrialResult

REPO = Path(__file__).resolve().parents[2]
COCO8 = REPO.parent / "shared" / "datasets" / "coco8"
IMGSZ = 64
EVAL_IMGSZ = 256  # the mAP comparison: boxes of a one-epoch model (20-140 px) mostly fit inside the image

REP_ARCH = Architecture.create({
    "p3_backbone": StageChoice(block="RepViT", kernels=(3, 5), se="in_blocks"),
    "p4_backbone": StageChoice(block="OREPA", downsample="RepConv"),
    "p5_out": StageChoice(block="C3k2_RVB_SE", se="after_concat", kernels=(3,), downsample="OREPA"),
})

# A stand-in report for trials whose latency is not the point (skips the measurement).
DUMMY_LATENCY = LatencyReport(median_ms=1.0, p90_ms=1.0, mean_ms=1.0, cv=0.0, n=1, mode="eager", device="cpu",
                              dtype="float32", batch=1, imgsz=IMGSZ, threads=2, torch=torch.__version__, fused=True)


@dataclass(frozen=True)
class Trained:
    """A finished trial and where it ran."""

    arch: Architecture
    result: TrialResult | TrialFailure
    out: Path
    cwd: Path
    seconds: float
    nc: int = 80


def run_module(module: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from ``cwd`` with this checkout importable, offline, locks under ``cwd``."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "REPNAS_LOCK_DIR": str(cwd / "locks"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)
