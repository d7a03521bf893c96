"""Loading a ``model.pt`` export prints nothing of Ultralytics' (no "Overriding model.yaml nc=80 ..." lines)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from trainers.deploy.exported import load_exported, save_exported
from trainers.deploy.inference import fused_copy
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import build_model
from trainers.model.heads import pin_head

ARCH = Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=(3,))})


class _Lines(logging.Handler):
    """Keeps every message logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def ultralytics_lines() -> Iterator[list[str]]:
    """What Ultralytics' logger says during the test, at INFO (an earlier test may have quietened it).

    Its own handler keeps the stream it saw at import, which pytest's capture does not see.
    """
    from ultralytics.utils import LOGGER

    level, handler = LOGGER.level, _Lines()
    LOGGER.setLevel(logging.INFO)
    LOGGER.addHandler(handler)
    yield handler.lines
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


@pytest.mark.usefixtures("one_thread")
def test_load_exported_prints_no_ultralytics_lines(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   ultralytics_lines: list[str]) -> None:
    from ultralytics.nn.tasks import DetectionModel

    DetectionModel("yolo26n.yaml", nc=3, verbose=False)
    assert ultralytics_lines == ["Overriding model.yaml nc=80 with nc=3"]  # the line this test watches for

    fused = fused_copy(build_model(ARCH, nc=3), before_fuse=lambda m: pin_head(m, "nms_free"))
    fused.names = {0: "a", 1: "b", 2: "c"}
    path = save_exported(fused, ARCH, tmp_path / "model.pt", extra={"head": "nms_free"})
    ultralytics_lines.clear()
    capfd.readouterr()
    loaded = load_exported(path)
    assert ultralytics_lines == [] and capfd.readouterr() == ("", "")
    assert loaded.yaml["nc"] == 3 and loaded.names == {0: "a", 1: "b", 2: "c"}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], fused(x)[0])
