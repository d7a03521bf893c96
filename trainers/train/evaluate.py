"""Validate a model object on a data YAML with Ultralytics' validator, returning mAP figures."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from trainers.model.heads import DEFAULT_HEAD


def evaluate(model: nn.Module, data: str, imgsz: int, batch: int = 16, device: str = "cpu",
             save_dir: str | Path | None = None, head: str = DEFAULT_HEAD) -> dict[str, float]:
    """mAP50-95 and mAP50 of ``model``'s ``head`` on ``data``'s val split (``model`` itself is not modified).

    Ultralytics' validator fuses its own Conv+BN on the copy it is given; a model already
    fused by :func:`trainers.deploy.inference.fused_copy` (with the same head pinned) passes through unchanged.
    """
    from ultralytics.models.yolo.detect import DetectionValidator

    from trainers.model.heads import ultralytics_nms_arg

    args: dict[str, Any] = {"data": data, "imgsz": imgsz, "batch": batch, "device": device, "plots": False,
                            "verbose": False, "save_json": False, "half": False, "workers": 0,
                            "nms": ultralytics_nms_arg(head)}
    with tempfile.TemporaryDirectory() as tmp:  # never Ultralytics' default ./runs
        where = Path(save_dir) if save_dir is not None else Path(tmp) / "val"
        args.update(project=str(where.parent), name=where.name, exist_ok=True)
        metrics = DetectionValidator(args=args)(model=copy.deepcopy(model).float())
    return {"map50_95": float(metrics["metrics/mAP50-95(B)"]), "map50": float(metrics["metrics/mAP50(B)"])}
