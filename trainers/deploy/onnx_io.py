"""ONNX export of a detector and the checks that prove the export: Conv count, onnxruntime match.

The TorchScript exporter (``dynamo=False``) is used: the dynamo one needs onnxscript. The
exporter folds Conv+BatchNorm in eval mode, so "no BN nodes" proves nothing about our fuses;
the number of Conv nodes does (unfused rep branches stay separate Convs).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class FirstOutput(nn.Module):
    """Wraps a detector so its export has one output: the decoded predictions ``(B, 4 + nc, anchors)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_onnx(model: nn.Module, path: str | Path, imgsz: int, opset: int = 17) -> Path:
    """Export ``model`` (eval, float32, batch 1, ``imgsz`` square) to ONNX and run ``onnx.checker``."""
    import onnx

    path = Path(path)
    x = torch.zeros(1, 3, imgsz, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python ints
        torch.onnx.export(FirstOutput(model.float().eval()).eval(), (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["output0"])
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def conv_nodes(path: str | Path) -> int:
    """Number of ``Conv`` nodes in an ONNX graph."""
    import onnx

    return sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node)


class _ConvCalls(torch.overrides.TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in (torch.nn.functional.conv2d, torch.conv2d):
            self.count += 1
        return func(*args, **(kwargs or {}))


def conv_calls(model: nn.Module, imgsz: int) -> int:
    """Number of 2-D convolutions one forward pass runs (for models the ONNX exporter cannot trace)."""
    with torch.no_grad(), _ConvCalls() as counter:
        model.float().eval()(torch.zeros(1, 3, imgsz, imgsz))
    return counter.count


def conv_layers(model: nn.Module) -> int:
    """Number of ``nn.Conv2d`` layers in a torch model."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def detections_distance(got: np.ndarray, want: np.ndarray) -> float:
    """Order-free max difference of the boxes and scores of two ``(B, k, 6)`` end-to-end outputs.

    The symmetric Hausdorff distance (max over rows of the L-inf distance to the nearest row of
    the other output) over the box and score columns, per image: top-k lists equal up to the
    order of near-tied scores compare as equal, a changed box or score does not. The class
    column is left out: an untrained or briefly trained head gives several classes of an anchor
    the same score, and runtimes break such exact ties differently (the mAP check covers classes).
    """
    worst = 0.0
    for a, b in zip(got[..., :5], want[..., :5]):
        d = np.abs(a[:, None, :] - b[None, :, :]).max(-1)
        worst = max(worst, float(d.min(1).max()), float(d.min(0).max()))
    return worst


def onnxruntime_max_diff(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max absolute difference between onnxruntime and torch outputs of ``model`` on ``x``.

    End-to-end outputs (``(B, k, 6)`` detections of the ``nms_free`` head) are compared without
    regard to row order (:func:`detections_distance`): near-tied scores may sort differently.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = FirstOutput(model.float().eval())(x).numpy()
    if got.shape != want.shape:
        return float("inf")
    if got.ndim == 3 and got.shape[-1] == 6:
        return detections_distance(got, want)
    return float(np.abs(got - want).max())
