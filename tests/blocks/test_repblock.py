"""Tests of blocks/repblock.py: RepBlock fuses exactly, and RepConv and RepBlock match the official code.

The official outputs come from ``data/repvgg_reference.pt``, written by ``data/make_reference_repvgg.py``
from DingXiaoH/RepVGG (``RepVGGBlock``) and meituan/YOLOv6 (``RepBlock``) on randomized weights and
BatchNorm statistics; the reference code itself is not imported here. Our modules are given the same
weights (state-dict names mapped) and must give the same outputs in float32 (1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from _helpers import (
    assert_every_param_gets_grad,
    assert_fuse_matches,
    assert_roundtrips,
    assert_walker_counts,
    count_params,
    randomize_,
)
from torch import nn

from blocks import RepBlock, RepConv

FIXTURE = Path(__file__).resolve().parent / "data" / "repvgg_reference.pt"
REFERENCE = torch.load(FIXTURE, weights_only=True)
TOL = {"rtol": 1e-5, "atol": 1e-5}

# Official RepVGGBlock branch names -> ours (RepConv).
REPVGG_NAMES = (("rbr_dense.conv.", "conv_kxk.conv."), ("rbr_dense.bn.", "conv_kxk.bn."),
                ("rbr_1x1.conv.", "conv_1x1.conv."), ("rbr_1x1.bn.", "conv_1x1.bn."), ("rbr_identity.", "bn_identity."))


def repconv_name(name: str) -> str:
    """A RepVGGBlock state-dict key as the key of the same tensor in our RepConv."""
    for theirs, ours in REPVGG_NAMES:
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    raise AssertionError(f"no RepConv name for reference key {name!r}")


def repblock_name(name: str) -> str:
    """A YOLOv6 RepBlock key (``conv1.``, ``block.<i>.``) as ours (``m.0.``, ``m.<i + 1>.``)."""
    if name.startswith("conv1."):
        return "m.0." + repconv_name(name[len("conv1."):])
    _, i, rest = name.split(".", 2)
    return f"m.{int(i) + 1}." + repconv_name(rest)


def load_reference(module: nn.Module, state: dict[str, torch.Tensor], rename: Callable[[str], str]) -> nn.Module:
    """Load the reference tensors into ``module`` under our names; every tensor of ours must get one.

    Only BatchNorm's ``num_batches_tracked`` counters (not in the fixture, unused in eval mode) stay as they are.
    """
    mapped = {rename(k): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(mapped, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return module.eval()


# --------------------------------------------------------------------------------------------- official code


@pytest.mark.parametrize("case", REFERENCE["repvgg_block"], ids=lambda c: "c{c1}-{c2}-s{s}-g{g}".format(**c["args"]))
def test_repconv_matches_official_repvgg_block(case: dict) -> None:
    """Same weights as DingXiaoH's RepVGGBlock: same output, same fused kernel and bias, same deploy output."""
    a = case["args"]
    ours = load_reference(RepConv(a["c1"], a["c2"], 3, a["s"], a["g"], act=nn.ReLU()), case["state_dict"],
                          repconv_name)
    assert (ours.bn_identity is None) == (a["c1"] != a["c2"] or a["s"] != 1)
    assert all(m.eps == REFERENCE["meta"]["bn_eps"] for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        torch.testing.assert_close(ours(case["x"]), case["y"], **TOL)
        w, b = ours.fused_weight_bias()
        torch.testing.assert_close(w, case["fused_weight"], **TOL)
        torch.testing.assert_close(b, case["fused_bias"], **TOL)
        assert ours.reparameterize() is True
        torch.testing.assert_close(ours(case["x"]), case["y_deploy"], **TOL)


def test_repblock_matches_official_yolov6_repblock() -> None:
    """Same weights as YOLOv6's RepBlock(3, 4, n=3) of RepVGGBlocks (ReLU): same output, fused or not."""
    case = REFERENCE["repblock"]
    a = case["args"]
    ours = load_reference(RepBlock(a["c1"], a["c2"], a["n"], act=nn.ReLU()), case["state_dict"], repblock_name)
    with torch.no_grad():
        torch.testing.assert_close(ours(case["x"]), case["y"], **TOL)
        assert ours.reparameterize() is True
        torch.testing.assert_close(ours(case["x"]), case["y"], **TOL)


def test_the_reference_is_not_trivially_matched() -> None:
    """Guard: a dropped identity branch, or SiLU instead of the official ReLU, misses the reference."""
    case = REFERENCE["repblock"]
    a = case["args"]
    no_identity = load_reference(RepBlock(a["c1"], a["c2"], a["n"], act=nn.ReLU()), case["state_dict"],
                                 repblock_name)
    no_identity.m[1].bn_identity = None
    silu = load_reference(RepBlock(a["c1"], a["c2"], a["n"]), case["state_dict"], repblock_name)
    with torch.no_grad():
        for wrong in (no_identity, silu):
            assert not torch.allclose(wrong(case["x"]), case["y"], **TOL)


# --------------------------------------------------------------------------------------------- fuse contract


@pytest.mark.parametrize(("c1", "c2", "n"), [(4, 4, 1), (3, 5, 1), (3, 5, 3), (6, 6, 2), (5, 3, 4)])
def test_fuse_matches_and_leaves_n_plain_3x3_convs(c1: int, c2: int, n: int) -> None:
    block = randomize_(RepBlock(c1, c2, n))
    y = assert_fuse_matches(block, torch.randn(2, c1, 13, 17))
    assert y.shape == (2, c2, 13, 17)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n and all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert [c.in_channels for c in convs] == [c1] + [c2] * (n - 1)


def test_structure_identity_branches_and_activation() -> None:
    block = RepBlock(3, 5, 3)
    assert len(block.m) == 3 and all(isinstance(m, RepConv) and m.k == 3 and m.s == 1 for m in block.m)
    assert [m.bn_identity is not None for m in block.m] == [False, True, True]  # the residual of each 5 -> 5 block
    assert RepBlock(5, 5, 1).m[0].bn_identity is not None
    assert all(isinstance(m.act, nn.SiLU) for m in block.m)
    relu = RepBlock(3, 5, 2, act=nn.ReLU())
    assert all(isinstance(m.act, nn.ReLU) for m in relu.m) and relu.m[0].act is not relu.m[1].act
    assert isinstance(RepBlock(3, 5, act=False).m[0].act, nn.Identity)


def test_walker_counts_and_matches() -> None:
    # Per RepConv: its kxk and 1x1 ConvBN, then itself (3 * 3); the RepBlock has nothing left of its own by then.
    model = nn.Sequential(randomize_(RepBlock(4, 6, 3)), nn.ReLU()).eval()
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        before = model(x)
    assert_walker_counts(model, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_gradients_and_round_trips(fused: bool) -> None:
    block = randomize_(RepBlock(4, 6, 2))
    x = torch.randn(2, 4, 9, 11)
    if not fused:
        assert_every_param_gets_grad(block, x)
    else:
        block.eval().reparameterize()
    assert_roundtrips(block, x)


def test_fuse_reduces_parameters_to_the_plain_convs() -> None:
    block = RepBlock(4, 6, 2).eval()
    before = count_params(block)
    block.reparameterize()
    assert count_params(block) == (4 * 6 * 9 + 6) + (6 * 6 * 9 + 6) < before


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"c1": 0, "c2": 4}, r"c1 must be a positive integer, got 0"),
    ({"c1": 4, "c2": -1}, r"c2 must be a positive integer, got -1"),
    ({"c1": 4, "c2": 4, "n": 0}, r"n must be a positive integer, got 0"),
    ({"c1": 4, "c2": 4, "act": "relu"}, r"act must be a bool, None or an nn.Module, got 'relu'"),
])
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RepBlock(**kwargs)


# --------------------------------------------------------------------------------------------- ONNX

onnx_params = [pytest.param(True, id="fused"), pytest.param(False, id="unfused")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated
@pytest.mark.parametrize("fused", onnx_params)
def test_onnx_has_one_conv_per_block_once_fused_and_matches(fused: bool, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    block = randomize_(RepBlock(4, 6, 3)).eval()
    if fused:
        block.reparameterize()
    x = torch.randn(2, 4, 13, 17)
    path = tmp_path / "repblock.onnx"
    torch.onnx.export(block, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == (3 if fused else 6), ops  # unfused: a 3x3 and a 1x1 Conv per block
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = block(x)
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]), expected,
                               rtol=1e-4, atol=1e-4)
