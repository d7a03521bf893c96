"""Helpers of the search tests: tiny spaces, running ``search.run``, reading its study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

REPO = Path(__file__).resolve().parents[2]
COCO8 = REPO.parent / "shared" / "datasets" / "coco8"
STALE_AT = "2020-01-01T00:00:00+00:00"

TINY_SPACE = """
base: yolo26.yaml
scale: n
stages:
  p3_backbone:
    block: [C3k2, RepViT, OREPA]
    kernels: [[3], [3, 5]]
latency: {imgsz: 64, device: cpu}
train: {epochs: 1, imgsz: 64, batch: 4}
"""

FIXED_SPACE = """
stages:
  p3_backbone: {block: C3k2}
latency: {imgsz: 64, device: cpu}
train: {epochs: 1, imgsz: 64, batch: 4}
"""


class ScriptedTrial:
    """A ``TrialLike`` that answers call ``i`` with choice ``script[i]`` (0 past the script) and records the calls."""

    def __init__(self, script: Sequence[int]):
        self.script = list(script)
        self.calls: list[tuple[str, int]] = []
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        i = len(self.calls)
        pick = self.script[i] if i < len(self.script) else 0
        assert name not in self.params, f"{name} suggested twice in one trial"
        self.calls.append((name, len(choices)))
        self.params[name] = choices[pick]
        return choices[pick]


def every_path(space: Any) -> list[tuple[Any, dict[str, Any]]]:
    """Every (architecture, params) ``suggest`` can produce: a depth-first walk over the choices of every call."""
    out: list[tuple[Any, dict[str, Any]]] = []
    todo: list[list[int]] = [[]]
    while todo:
        script = todo.pop()
        trial = ScriptedTrial(script)
        arch = space.suggest(trial)
        taken = script + [0] * (len(trial.calls) - len(script))
        for depth in range(len(script), len(trial.calls)):
            todo.extend(taken[:depth] + [alt] for alt in range(1, trial.calls[depth][1]))
        out.append((arch, trial.params))
    return out


def space_of(text: str) -> Any:
    """A :class:`~search.space.SearchSpace` from YAML text (dedented), named ``test.yaml``."""
    import textwrap

    import yaml

    from search.space import SearchSpace
    from search.space.schema import parse_space

    return SearchSpace(parse_space(yaml.safe_load(textwrap.dedent(text)), "test.yaml"))


def run_search(tmp: Path, space_text: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    space = tmp / "space.yaml"
    space.write_text(space_text)
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--studies-dir", str(tmp / "studies"), *args]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=timeout)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m args`` from ``cwd``, offline; its output captured."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "YOLO_OFFLINE": "1"})


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's COMPLETE trials (not copied)."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def load(tmp: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'studies' / f'{name}.db'}")


def trial_dirs(tmp: Path, name: str) -> list[Path]:
    return sorted((tmp / "studies" / name).glob("trial_*"))




def latency_report(median: float, ci: tuple[float, float], imgsz: int = 640, at: str = STALE_AT,
                   mode: str = "eager") -> Any:
    """A CPU latency report with these figures (``measured_at`` long ago by default)."""
    import torch

    from trainers.latency.report import LatencyReport
    from trainers.model.heads import DEFAULT_HEAD
    from trainers.train.devices import device_name

    return LatencyReport(median_ms=median, p90_ms=median * 1.05, mean_ms=median, cv=0.01, n=30, mode=mode,
                         device=device_name(torch.device("cpu")), dtype="float32", batch=1, imgsz=imgsz, threads=1,
                         torch=torch.__version__, fused=True, backend_version=torch.__version__, head=DEFAULT_HEAD,
                         ci_low_ms=ci[0], ci_high_ms=ci[1], measured_at=at)


def stale_baseline(cache_path: Path) -> tuple[str, Any]:
    """A stale, far too slow cache entry of the stock model at the tiny space's setting (64 px, 1 CPU thread)."""
    from trainers.latency.measure import LatencyCache, cache_key
    from trainers.latency.setting import LatencySetting
    from trainers.model.architecture import Architecture
    from trainers.model.heads import DEFAULT_HEAD

    key = cache_key(LatencySetting(imgsz=64, device="cpu", dtype="auto", threads=1, head=DEFAULT_HEAD),
                    Architecture.baseline().hash)
    stale = latency_report(1000.0, (999.0, 1001.0), imgsz=64)
    LatencyCache(cache_path).put(key, stale)
    return key, stale


@dataclass(frozen=True)
class TinyRun:
    """A finished 3-trial search of ``TINY_SPACE`` (study ``tiny``, seed 1, CPU) under ``root``, shared by the tests
    that read it, resume it with the same command (``args``: no trial is added, the run config stays the same) or
    audit it (``search.audit`` adds its runs under ``tiny/audit`` and the ``audit`` and ``map_seed_spread`` attrs; a
    later resume's report shows that spread, which none of the sharing tests asserts on). It started with a stale,
    far too slow cache entry of the stock model (``stale_key`` -> ``stale``), which the end-of-search interleaved
    re-measure replaces. Tests that change the study (re-measure targets, retrain, export) work on
    :func:`copy_of` it."""

    root: Path
    result: subprocess.CompletedProcess[str]
    stale_key: str
    stale: Any
    args: tuple[str, ...]


def copy_of(run: TinyRun, dest: Path) -> Path:
    """``dest`` holding a copy of ``run``'s folder (its study ``tiny``, trial runs and latency cache), to change freely.

    The study's records still name the weights under ``run.root``, which the copy only reads."""
    import shutil

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    shutil.copytree(run.root, dest, dirs_exist_ok=True)
    return dest
