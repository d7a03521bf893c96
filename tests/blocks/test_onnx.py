"""ONNX export of fused blocks: exactly ONE Conv node each, and onnxruntime matches torch.

The exporter folds BatchNorm into convs in eval mode by itself, so "no BatchNorm node" would
prove nothing; counting Conv nodes does (an unfused RepConv exports one Conv per branch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _helpers import randomize_
from torch import nn

from blocks import MultiScaleRepVGGDW, OREPAConv, RepConv, RepVGGDW

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# We pin the TorchScript exporter (dynamo=False); it warns that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FACTORIES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "RepConv": (lambda: RepConv(4, 4, 3), 4),
    "RepConv-s2-g2": (lambda: RepConv(4, 6, 5, 2, 2), 4),
    "RepVGGDW": (lambda: RepVGGDW(5, 3), 5),
    "MultiScaleRepVGGDW": (lambda: MultiScaleRepVGGDW(5, (3, 5, 7)), 5),
    "OREPAConv": (lambda: OREPAConv(4, 6, 3, 2, 2), 4),
}


def _export(module: nn.Module, x: torch.Tensor, path: Path) -> list[str]:
    """Export ``module`` with the TorchScript exporter; return the op types of the graph."""
    torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _run_ort(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fused_block_exports_one_conv_and_matches(name: str, tmp_path: Path) -> None:
    factory, c = FACTORIES[name]
    module = randomize_(factory()).eval()
    module.reparameterize()
    x = torch.randn(2, c, 13, 17)
    ops = _export(module, x, tmp_path / f"{name}.onnx")
    assert ops.count("Conv") == 1, ops
    with torch.no_grad():
        expected = module(x)
    torch.testing.assert_close(_run_ort(tmp_path / f"{name}.onnx", x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("factory", "convs"),
    [
        (lambda: RepConv(4, 4, 3), 2),  # kxk + 1x1 (the identity BN stays a BatchNormalization)
        (lambda: RepConv(4, 6, 3, 2), 2),
        (lambda: MultiScaleRepVGGDW(4, (3, 5, 7)), 6),  # per branch: dw kxk + dw 1x1
    ],
    ids=["RepConv", "RepConv-s2", "MultiScaleRepVGGDW"],
)
def test_unfused_block_exports_several_convs(factory: Callable[[], nn.Module], convs: int, tmp_path: Path) -> None:
    """Shows the Conv count above can fail: without the fuse there is one Conv per conv branch."""
    module = randomize_(factory()).eval()
    ops = _export(module, torch.randn(1, 4, 13, 17), tmp_path / "unfused.onnx")
    assert ops.count("Conv") == convs, ops
