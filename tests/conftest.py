"""Fixtures shared by every test folder: a private coco8 copy, one torch thread.

Ultralytics runs offline in the tests (``YOLO_OFFLINE=1`` is set here, at import, before any
test imports Ultralytics), so no test waits for a download or a network timeout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
COCO8 = REPO.parent / "shared" / "datasets" / "coco8"


@pytest.fixture
def coco8_copy(tmp_path: Path) -> Path:
    """A private copy of ``../shared/datasets/coco8`` under ``tmp_path``; returns its data YAML.

    Ultralytics writes ``labels/*.cache`` next to a dataset, so tests never train on the shared
    folder itself. Skips when the dataset is not present.
    """
    if not (COCO8 / "coco8.yaml").is_file():
        pytest.skip(f"{COCO8} is not present")
    dst = tmp_path / "coco8"
    shutil.copytree(COCO8, dst)
    return dst / "coco8.yaml"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (the machine is shared: more threads are slower), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
