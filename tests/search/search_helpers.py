"""Helpers of the search tests: tiny spaces, running ``search.run``, reading its study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

REPO = Path(__file__).resolve().parents[2]
COCO8 = REPO.parent / "shared" / "datasets" / "coco8"

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


def load(tmp: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'studies' / f'{name}.db'}")


def trial_dirs(tmp: Path, name: str) -> list[Path]:
    return sorted((tmp / "studies" / name).glob("trial_*"))


