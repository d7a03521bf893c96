"""Helpers of the search tests: tiny spaces, running ``search.run``, reading its study."""

from __future__ import annotations

import os
import subprocess
import sys
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


