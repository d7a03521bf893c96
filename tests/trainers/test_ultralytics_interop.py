"""Ultralytics' own tools on our checkpoints: ``YOLO(best.pt).export/val/predict`` with every block fused.

A checkpoint of an architecture with RepViT, OREPA and C3k2_RVB_SE stages (trained one epoch here)
goes through Ultralytics' exporter to ONNX and TorchScript (and OpenVINO where installed). Each
export must (a) hold no unfused rep branch (OREPA's run-time kernel does not even trace), (b) give
the fused checkpoint's outputs through Ultralytics' ``AutoBackend``, and (c) score the same mAP
with ``YOLO(exported).val()`` as ``YOLO(best.pt).val()`` with the checkpoint's class names. A one-epoch
model scores an mAP near 0, so (b) is the sharp check; (c) checks the path a user takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from trial_helpers import REP_ARCH

import blocks
from trainers.deploy.onnx_io import match_detections
from trainers.model.build import build_model
from trainers.model.detection_model import RepDetectionModel

pytestmark = pytest.mark.slow
IMGSZ = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, coco8_copy: Path) -> Path:
    """best.pt of REP_ARCH after one epoch at 64 px (our trainer, so Ultralytics pickles our model class)."""
    import os

    from trainers.train.trainer import ArchitectureTrainer

    tmp = tmp_path_factory.mktemp("interop")
    os.environ["YOLO_OFFLINE"] = "1"
    trainer = ArchitectureTrainer(overrides={
        "model": "yolo26n.yaml", "data": str(coco8_copy), "epochs": 1, "imgsz": IMGSZ, "batch": 4, "device": "cpu",
        "project": str(tmp), "name": "run", "exist_ok": True, "pretrained": False, "plots": False, "workers": 0,
        "amp": False, "verbose": False, "nms": False, "seed": 0}, architecture=REP_ARCH)
    trainer.train()
    assert trainer.best.is_file()
    return Path(trainer.best)


def test_build_model_gives_the_subclass_and_its_fuse_folds_our_blocks() -> None:
    model = build_model(REP_ARCH, nc=3).eval()
    assert isinstance(model, RepDetectionModel)
    assert any(isinstance(m, blocks.OREPAConv) and not m.is_fused() for m in model.modules())
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse(verbose=False)
        after = model(x)[0]
    left = [type(m).__name__ for m in model.modules() if isinstance(m, blocks.Reparameterizable)
            and not m.is_fused()]
    assert left == []  # Ultralytics' fuse() alone leaves every one of ours (PITFALLS)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_fuse_refuses_a_training_model() -> None:
    model = build_model(REP_ARCH, nc=3).train()
    with pytest.raises(RuntimeError, match="training"):
        model.fuse(verbose=False)


def _export(checkpoint: Path, fmt: str, tmp: Path) -> Path:
    from trainers.deploy.ultralytics_export import EXPORTED_NAME, export_with_ultralytics

    return export_with_ultralytics(checkpoint, tmp / EXPORTED_NAME[fmt], fmt, IMGSZ, "nms_free")


def _raw(weights: Path) -> Any:
    """The first output of Ultralytics' AutoBackend (what YOLO(...).predict/val run) on a fixed input."""
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(weights), device=torch.device("cpu"), fuse=True, verbose=False)
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = backend(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    return torch.as_tensor(y).float()


def _val(weights: Path, data: Path, tmp: Path) -> dict[str, Any]:
    """``YOLO(weights).val()`` on ``data``: its box metrics and the class names it used."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    m = model.val(data=str(data), imgsz=IMGSZ, batch=4, device="cpu", nms=False, plots=False, verbose=False,
                  project=str(tmp), name="val", exist_ok=True)
    return {"precision": float(m.box.mp), "recall": float(m.box.mr), "map50": float(m.box.map50),
            "map50_95": float(m.box.map), "names": dict(m.names)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
def test_ultralytics_exports_every_block_fused_and_scores_the_same(checkpoint: Path, coco8_copy: Path,
                                                                   tmp_path: Path, fmt: str) -> None:
    if fmt == "openvino":
        pytest.importorskip("openvino")
    exported = _export(checkpoint, fmt, tmp_path)
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(exported)).graph.node}
        convs = sum(n.op_type == "Conv" for n in onnx.load(str(exported)).graph.node)
        fused = build_model(REP_ARCH, nc=int(torch.load(checkpoint, weights_only=False)["model"].nc)).eval()
        fused.fuse(verbose=False)
        assert convs == sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules())  # one Conv per fused layer
        assert "BatchNormalization" not in ops
    want, got = _raw(checkpoint), _raw(exported)
    assert got.shape == want.shape and got.shape[-1] == 6  # the one-to-one head: (1, top-k, box+score+class)
    if fmt != "openvino":  # Ultralytics runs OpenVINO at the CPU's default precision (bfloat16 on this AMD EPYC)
        assert match_detections(got.numpy(), want.numpy()).ok  # near-tied scores may sort differently
    got_val, want_val = _val(exported, coco8_copy, tmp_path), _val(checkpoint, coco8_copy, tmp_path)
    assert got_val["names"] == want_val["names"] != {}  # the export's metadata carries the real class names
    for key in ("precision", "recall", "map50", "map50_95"):
        assert abs(got_val[key] - want_val[key]) <= 1e-3, key


def test_a_checkpoint_model_from_before_the_subclass_is_rebuilt_with_its_weights() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from trainers.deploy.ultralytics_export import as_rep_model

    old = build_model(REP_ARCH, nc=3).eval()
    old.__class__ = DetectionModel  # what checkpoints written before RepDetectionModel existed unpickle to
    old.names = {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights a fresh build would not have
    new = as_rep_model(old)
    assert isinstance(new, RepDetectionModel) and new.names == old.names
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        torch.testing.assert_close(new(x)[0], old(x)[0])
        new.fuse(verbose=False)
        torch.testing.assert_close(new(x)[0], old(x)[0], rtol=1e-4, atol=1e-4)
