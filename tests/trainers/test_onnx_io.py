"""The onnxruntime vs torch check compares top-k detections as sets: ties may swap, real mismatches fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.deploy.inference import fused_copy
from trainers.deploy.onnx_io import export_onnx, match_detections, onnxruntime_vs_torch
from trainers.model.architecture import Architecture
from trainers.model.build import build_model
from trainers.model.heads import pin_head

IMGSZ = 64
pytestmark = pytest.mark.usefixtures("one_thread")  # the machine is shared: one torch thread


def _detections(k: int = 8, seed: int = 0) -> np.ndarray:
    """``(1, k, 6)`` top-k rows: distinct boxes, scores sorted down from 0.9 (the last two tied), classes 0-2."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 48, (k, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 16, (k, 2))], 1)
    scores = np.linspace(0.9, 0.2, k)
    scores[-1] = scores[-2] = 0.2
    return np.concatenate([boxes, scores[:, None], (np.arange(k) % 3)[:, None]], 1)[None].astype(np.float32)


def test_permuted_rows_and_a_swap_at_the_kth_tie_match() -> None:
    want = _detections()
    got = want[:, ::-1].copy()  # same detections, another order
    got[0, :2, 4] += 5e-4  # near-tied scores within the tolerance
    want[0, 3, :4], got[0, 4, :4] = [20.0, 20.0, 19.99, 20.01], [20.0, 20.0, 19.99, 20.0101]  # inverted: IoU 0
    m = match_detections(got, want)
    assert (m.ok, m.matched, m.tied_at_k, m.unmatched) == (True, 8, 0, 0)
    assert m.max_score_diff == pytest.approx(5e-4, abs=1e-6) and m.max_box_diff == pytest.approx(1e-4, abs=1e-5)
    swapped = want.copy()
    swapped[0, -1, :4] = [1, 2, 9, 10]  # the k-th place: another detection of the same (tied) score
    swapped[0, -1, 4] += 2e-4
    m = match_detections(swapped, want)
    assert (m.ok, m.matched, m.tied_at_k, m.unmatched) == (True, 7, 2, 0)


@pytest.mark.parametrize(("row", "col", "value"), [
    (0, 4, 0.7),  # the best score dropped
    (1, 5, 2.0),  # another class above the tie
    (2, 0, 20.0),  # a box moved
])
def test_a_changed_detection_above_the_tie_does_not_match(row: int, col: int, value: float) -> None:
    want = _detections()
    changed = want.copy()
    if col == 0:
        changed[0, row, [0, 2]] += value
    else:
        changed[0, row, col] = value
    m = match_detections(changed[:, ::-1].copy(), want)
    assert not m.ok and m.unmatched == 2 and m.matched == 7


def _weakly_trained(seed: int) -> torch.nn.Module:
    """Stock YOLO26n (3 classes) whose output depends on its input, one-to-one head pinned, fused.

    Fresh BN statistics lose the input on its way to the head; here they are those of 16 random
    images, and the class logits get a spread (random last convs of the one-to-one class branch).
    """
    torch.manual_seed(seed)
    model = build_model(Architecture.baseline(), nc=3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(torch.rand(16, 3, IMGSZ, IMGSZ))
        for branch in model.model[-1].one2one_cv3:
            branch[-1].weight.normal_(0, 0.2)
    return fused_copy(model.eval(), before_fuse=lambda m: pin_head(m, "nms_free"))


def test_an_untrained_head_with_tied_scores_passes_and_a_broken_weight_fails(tmp_path: Path) -> None:
    torch.manual_seed(0)
    untrained = fused_copy(build_model(Architecture.baseline(), nc=3).eval(),
                           before_fuse=lambda m: pin_head(m, "nms_free"))
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    check = onnxruntime_vs_torch(untrained, export_onnx(untrained, tmp_path / "untrained.onnx", IMGSZ), x)
    # every anchor of a level scores the same: the runtimes keep different rows at the k-th place
    assert check["ok"] and check["tied_at_k"] > 0 and check["unmatched"] == 0, check["detail"]
    assert check["max_score_diff"] <= 1e-5

    model = _weakly_trained(1)
    path = export_onnx(model, tmp_path / "model.onnx", IMGSZ)
    check = onnxruntime_vs_torch(model, path, x)
    assert check["ok"] and check["matched"] == 84 and check["max_box_diff"] < 1e-3, check["detail"]
    with torch.no_grad():
        conv = next(m for m in model.model[2].modules() if isinstance(m, torch.nn.Conv2d))
        conv.weight.mul_(1.5)  # broken after export: torch and the ONNX file now disagree
    broken = onnxruntime_vs_torch(model, path, x)
    assert not broken["ok"] and broken["unmatched"] > 10, broken["detail"]
