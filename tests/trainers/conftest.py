"""Fixtures of the trainers tests: one private dataset copy per test module, device locks under ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def coco8_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of coco8 (or a tiny synthetic set without ../shared) for the module; its YAML."""
    from tests.detection_data import private_detection_data

    return private_detection_data(tmp_path_factory.mktemp("data"))


@pytest.fixture
def locks_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device locks under ``tmp_path``, not ``studies/.locks`` of the current directory; Ultralytics offline."""
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
