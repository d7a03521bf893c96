"""Fixtures shared by every test folder: a private coco8 copy, one torch thread.

Ultralytics runs offline in the tests (``YOLO_OFFLINE=1`` is set here, at import, before any
test imports Ultralytics), so no test waits for a download or a network timeout.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
COCO8 = REPO.parent / "shared" / "datasets" / "coco8"


@pytest.fixture
def coco8_copy(tmp_path: Path) -> Path:
    """A private copy of ``../shared/datasets/coco8`` (or, without it, a tiny synthetic set); its data YAML."""
    from tests.detection_data import private_detection_data

    return private_detection_data(tmp_path)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (the machine is shared: more threads are slower), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
