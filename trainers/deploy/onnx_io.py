"""ONNX export of a detector and the checks that prove the export: Conv count, onnxruntime match.

The TorchScript exporter (``dynamo=False``) is used: the dynamo one needs onnxscript. The
exporter folds Conv+BatchNorm in eval mode, so "no BN nodes" proves nothing about our fuses;
the number of Conv nodes does (unfused rep branches stay separate Convs).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
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


# a detection matches another of its class with a score within SCORE_TOL and a box overlapping by IOU_MIN
# or, for the tiny or inverted boxes an untrained head gives (where IoU means nothing), within BOX_TOL_PX
SCORE_TOL, IOU_MIN, BOX_TOL_PX = 1e-3, 0.99, 1e-2


@dataclass(frozen=True)
class DetectionsMatch:
    """Two ``(B, k, 6)`` end-to-end outputs compared as sets of detections, image by image.

    ``matched`` pairs agree on class, box (IoU >= ``IOU_MIN``, or every coordinate within
    ``BOX_TOL_PX``) and score (within the tolerance);
    ``tied_at_k`` rows have no partner but a score tied with the other output's k-th (lowest) score,
    so either runtime may keep them; ``unmatched`` rows have no partner above that tie: a real mismatch.
    """

    matched: int
    tied_at_k: int
    unmatched: int
    max_score_diff: float  # over matched pairs
    max_box_diff: float  # over matched pairs, in pixels
    min_iou: float  # over matched pairs

    @property
    def ok(self) -> bool:
        """Whether every detection above the k-th score tie has its partner."""
        return self.unmatched == 0

    def detail(self) -> str:
        """One line: the counts and the worst differences."""
        return (f"{self.matched} detections matched (class, IoU >= {IOU_MIN:g} or box within {BOX_TOL_PX:g} px, "
                f"score within {SCORE_TOL:g}), "
                f"{self.tied_at_k} tied at the k-th score, {self.unmatched} unmatched; matched: max score diff "
                f"{self.max_score_diff:.2e}, max box diff {self.max_box_diff:.2e} px, min IoU {self.min_iou:.4f}")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every ``xyxy`` box of ``a`` (n, 4) with every one of ``b`` (m, 4): (n, m); 0 for empty boxes."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a, area_b = (np.clip(c[:, 2:] - c[:, :2], 0, None).prod(-1) for c in (a, b))
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _pairs(a: np.ndarray, b: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """One-to-one pairs of rows of ``a`` and ``b`` (k, 6): same class, overlapping, close scores; closest first."""
    box_close = np.abs(a[:, None, :4] - b[None, :, :4]).max(-1) <= BOX_TOL_PX
    fits = ((a[:, None, 5] == b[None, :, 5]) & ((box_iou(a[:, :4], b[:, :4]) >= IOU_MIN) | box_close)
            & (np.abs(a[:, None, 4] - b[None, :, 4]) <= tol))
    cost = np.abs(a[:, None, :5] - b[None, :, :5]).max(-1)
    out: list[tuple[int, int]] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    for i, j in sorted(zip(*np.nonzero(fits)), key=lambda ij: cost[ij]):
        if i not in used_a and j not in used_b:
            used_a.add(int(i))
            used_b.add(int(j))
            out.append((int(i), int(j)))
    return out


def match_detections(got: np.ndarray, want: np.ndarray, tol: float = SCORE_TOL) -> DetectionsMatch:
    """Compare two ``(B, k, 6)`` top-k outputs (box, score, class) as sets, not row by row.

    Runtimes sort near-equal scores differently and break ties at the k-th place differently,
    so a row may move or be swapped for another of the same score. Each detection is matched to
    one of the other output with its class, an IoU >= :data:`IOU_MIN` (or a box within
    :data:`BOX_TOL_PX`) and a score within ``tol``;
    a row left without partner is allowed only when its score is within ``tol`` of the other
    output's k-th (lowest) score.
    """
    matched = tied = unmatched = 0
    score_diff = box_diff = 0.0
    min_iou = 1.0
    for a, b in zip(got, want):
        pairs = _pairs(a, b, tol)
        for i, j in pairs:
            score_diff = max(score_diff, float(abs(a[i, 4] - b[j, 4])))
            box_diff = max(box_diff, float(np.abs(a[i, :4] - b[j, :4]).max()))
            min_iou = min(min_iou, float(box_iou(a[i:i + 1, :4], b[j:j + 1, :4])[0, 0]))
        for rows, used, other in ((a, {i for i, _ in pairs}, b), (b, {j for _, j in pairs}, a)):
            left = np.array([r for r in range(len(rows)) if r not in used], dtype=int)
            at_k = rows[left, 4] <= other[:, 4].min() + tol if len(left) else np.zeros(0, bool)
            tied, unmatched = tied + int(at_k.sum()), unmatched + int((~at_k).sum())
        matched += len(pairs)
    return DetectionsMatch(matched, tied, unmatched, score_diff, box_diff, min_iou)


def onnxruntime_vs_torch(model: nn.Module, path: str | Path, x: torch.Tensor, tol: float = SCORE_TOL) -> dict[str, Any]:
    """Run the ONNX file on onnxruntime and ``model`` on torch with ``x``; the check ``{"ok", "detail", ...}``.

    End-to-end outputs (``(B, k, 6)`` detections of the ``nms_free`` head) are compared as sets
    (:func:`match_detections`): near-tied scores may sort, or fall out of the top-k, differently.
    Other outputs element by element: ``max_abs_diff`` within ``tol``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = FirstOutput(model.float().eval())(x).numpy()
    if got.shape != want.shape:
        return {"ok": False, "detail": f"output shape {list(got.shape)} (onnxruntime) != {list(want.shape)} (torch)"}
    if got.ndim == 3 and got.shape[-1] == 6:
        match = match_detections(got, want, tol)
        return {"ok": match.ok, **asdict(match), "detail": match.detail()}
    diff = float(np.abs(got - want).max())
    return {"ok": diff <= tol, "max_abs_diff": diff, "detail": f"max abs diff {diff:.2e} (limit {tol:g})"}
