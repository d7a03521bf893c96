"""Fixtures of the search tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from search_helpers import COCO8


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of coco8 (Ultralytics writes label caches next to the data)."""
    if not COCO8.is_dir():
        pytest.skip("../shared/datasets/coco8 is not present")
    dst = tmp_path_factory.mktemp("data") / "coco8"
    shutil.copytree(COCO8, dst)
    return dst / "coco8.yaml"
