"""Export a checkpoint through Ultralytics' own exporter, so the file carries Ultralytics' metadata.

``YOLO("model.onnx")`` reads the class names, stride, image size, task and head from the
metadata Ultralytics' exporter writes; a plain ``torch.onnx.export`` file has none (detections
come out as ``class43``). The exporter fuses through ``model.fuse()``, which folds our blocks
only on a :class:`~trainers.model.detection_model.RepDetectionModel`: a checkpoint written before that
class existed (a plain ``DetectionModel`` holding our blocks) is rebuilt as one first, with the
same weights.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

# what Ultralytics writes for each format, beside its source checkpoint
EXPORTED_NAME = {"onnx": "best.onnx", "torchscript": "best.torchscript", "openvino": "best_openvino_model"}


def as_rep_model(model: Any) -> Any:
    """``model`` as a :class:`RepDetectionModel` (itself when it is one), same architecture, weights and attrs."""
    from trainers.model.build import architecture_of, build_model
    from trainers.model.detection_model import RepDetectionModel

    if isinstance(model, RepDetectionModel):
        return model
    rebuilt = build_model(architecture_of(model), nc=int(model.yaml["nc"]))
    rebuilt.load_state_dict(model.float().state_dict())
    for attr in ("names", "args", "stride", "pt_path", "yaml_file", "task"):
        if hasattr(model, attr):
            setattr(rebuilt, attr, getattr(model, attr))
    return rebuilt.eval()


def export_with_ultralytics(weights: Path, dst: Path, fmt: str, imgsz: int, head: str) -> Path:
    """``YOLO(weights).export(format=fmt)`` at ``imgsz`` with ``head`` pinned, moved to ``dst``; returns ``dst``.

    CPU, float32, static shape, batch 1; ONNX unsimplified (onnxslim is not a dependency, and
    Ultralytics would try to install it). ``ValueError`` for a format not in :data:`EXPORTED_NAME`.
    """
    from ultralytics import YOLO

    from trainers.model.heads import ultralytics_nms_arg

    if fmt not in EXPORTED_NAME:
        raise ValueError(f"format must be one of {sorted(EXPORTED_NAME)}, got {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="repnas-export-") as tmp:
        src = Path(tmp) / "best.pt"
        shutil.copyfile(weights, src)  # the exporter writes beside its source
        yolo = YOLO(str(src), task="detect")
        yolo.model = as_rep_model(yolo.model)
        extra = {"simplify": False} if fmt == "onnx" else {}
        out = Path(yolo.export(format=fmt, imgsz=imgsz, nms=ultralytics_nms_arg(head), device="cpu", batch=1,
                               half=False, dynamic=False, verbose=False, **extra))
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        shutil.move(str(out), dst)
    return dst
