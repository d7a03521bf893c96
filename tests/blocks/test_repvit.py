"""Tests for blocks/repvit.py: RepViTBlock and C3k2_RVB_SE (fuse contract, structure,
serialisation, gradients, argument checks)."""

from __future__ import annotations

import copy
import functools
import math
import pickle

import pytest
import torch
from _helpers import (
    assert_every_param_gets_grad,
    assert_fuse_matches,
    assert_roundtrips,
    assert_walker_counts,
    randomize_,
)
from torch import nn

from blocks._fuse import Reparameterizable, reparameterize_model
from blocks.repvit import C3k2_RVB_SE, ChannelMixer, RepViTBlock
from blocks.se import DynamicSE, EfficientSE

H, W = 13, 17  # non-square, odd: exercises padding and ceil-mode striding

SE_FACTORIES = {
    "none": None,
    "efficient": None,  # the block's default EfficientSE(channels, se_reduction)
    "dynamic": functools.partial(DynamicSE, min_ratio=2, max_ratio=4),
}

# (c1, c2, s, kernels, se kind)
BLOCK_CASES = [
    (8, 8, 1, (3,), "efficient"),
    (7, 7, 1, (3, 5), "dynamic"),
    (5, 9, 1, (3, 5, 7), "efficient"),
    (6, 10, 1, (3,), "none"),
    (12, 7, 1, (5,), "dynamic"),
    (7, 12, 2, (3,), "efficient"),
    (8, 8, 2, (3, 5, 7), "dynamic"),
    (9, 5, 2, (3, 5), "none"),
]

# (c1, c2, n, se placement, kernels, e, se kind)
C3K2_CASES = [
    (6, 8, 1, "after_concat", (3,), 0.5, "efficient"),
    (5, 9, 2, "in_blocks", (3, 5), 0.5, "dynamic"),
    (8, 7, 1, "none", (3, 5, 7), 0.75, "none"),
    (7, 10, 2, "after_concat", (3, 5, 7), 0.5, "dynamic"),
    (8, 8, 1, "in_blocks", (3,), 0.5, "efficient"),
]


def _randomize(module: nn.Module) -> nn.Module:
    """``randomize_``, then positive SE hidden biases: with only 1-3 hidden units, random
    weights can leave every ReLU dead on a small batch, and the gradient check would then
    (correctly) report the SE's first layer as unreached."""
    randomize_(module)
    with torch.no_grad():
        for se in _se_modules(module):
            se.fc1.bias.abs_().add_(1.0)
    return module


def _block(c1: int, c2: int, s: int, kernels: tuple[int, ...], se_kind: str) -> RepViTBlock:
    block = RepViTBlock(c1, c2, s=s, se=se_kind != "none", se_reduction=2, kernels=kernels,
                        se_module=SE_FACTORIES[se_kind])
    return _randomize(block)


def _c3k2(c1: int, c2: int, n: int, se: str, kernels: tuple[int, ...], e: float, se_kind: str) -> C3k2_RVB_SE:
    return _randomize(C3k2_RVB_SE(c1, c2, n=n, se=se, se_reduction=2, kernels=kernels, e=e,
                                  se_module=SE_FACTORIES[se_kind]))


def _depthwise_convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]


def _se_modules(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (EfficientSE, DynamicSE))]


def _expected_walker_count(model: nn.Module) -> int:
    """Every re-parameterizable leaf-level module changes once; the containers (RepViTBlock,
    C3k2_RVB_SE) only fuse their children, which the walker has already done, so they report
    no change of their own."""
    containers = (RepViTBlock, C3k2_RVB_SE)
    return sum(isinstance(m, Reparameterizable) and not isinstance(m, containers) for m in model.modules())


# --- RepViTBlock ------------------------------------------------------------------------

block_ids = [f"c{c1}-{c2}_s{s}_k{''.join(map(str, k))}_{se}" for c1, c2, s, k, se in BLOCK_CASES]


@pytest.mark.parametrize(("c1", "c2", "s", "kernels", "se_kind"), BLOCK_CASES, ids=block_ids)
def test_block_fuse_matches_and_leaves_one_depthwise_conv(c1, c2, s, kernels, se_kind) -> None:
    block = _block(c1, c2, s, kernels, se_kind)
    x = torch.randn(3, c1, H, W)
    y = assert_fuse_matches(block, x)
    assert y.shape == (3, c2, math.ceil(H / s), math.ceil(W / s))
    dws = _depthwise_convs(block)
    assert len(dws) == 1, "the token mixer must fuse into exactly one depthwise conv"
    assert dws[0].kernel_size == (max(kernels),) * 2 and dws[0].stride == (s, s)
    assert dws[0].groups == dws[0].in_channels == c1


@pytest.mark.parametrize(("c1", "c2", "s", "kernels", "se_kind"), BLOCK_CASES, ids=block_ids)
def test_block_walker_fuses_once(c1, c2, s, kernels, se_kind) -> None:
    block = _block(c1, c2, s, kernels, se_kind).eval()
    x = torch.randn(2, c1, H, W)
    with torch.no_grad():
        ref = block(x)
    assert_walker_counts(block, _expected_walker_count(block))
    assert block.reparameterize() is False
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("c1", "c2", "s", "kernels", "se_kind"), BLOCK_CASES, ids=block_ids)
def test_block_gradients_and_round_trips(c1, c2, s, kernels, se_kind) -> None:
    block = _block(c1, c2, s, kernels, se_kind)
    x = torch.randn(2, c1, H, W)
    assert_every_param_gets_grad(block, x)
    assert_roundtrips(block, x)
    reparameterize_model(block.eval())
    assert_roundtrips(block, x)


@pytest.mark.parametrize(("c1", "c2", "s", "residual"), [(8, 8, 1, True), (6, 10, 1, False),
                                                       (7, 12, 2, True), (8, 8, 2, True)])
def test_block_structure(c1: int, c2: int, s: int, residual: bool) -> None:
    block = RepViTBlock(c1, c2, s=s)
    mixer = block.channel_mixer
    assert isinstance(mixer, ChannelMixer) and mixer.residual is residual
    cm = c1 if s == 1 else c2
    assert (mixer.pw1.conv.in_channels, mixer.pw1.conv.out_channels) == (cm, 2 * cm)
    assert (mixer.pw2.conv.in_channels, mixer.pw2.conv.out_channels) == (2 * cm, c2)
    (se,) = _se_modules(block)
    assert se.c == c1, "the SE sits in the token mixer, on c1 channels"


def test_fresh_residual_block_starts_as_its_token_mixer() -> None:
    """The residual branch's last BN starts at zero (RepViT's init)."""
    block = RepViTBlock(8, 8).eval()
    x = torch.randn(2, 8, H, W)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.token_mixer(x))


def test_block_without_se_has_none_and_se_module_is_used() -> None:
    assert _se_modules(RepViTBlock(8, 8, se=False)) == []
    (se,) = _se_modules(RepViTBlock(8, 8, se_module=lambda c: DynamicSE(c, 2, 8)))
    assert isinstance(se, DynamicSE) and se.c == 8
    (se,) = _se_modules(RepViTBlock(8, 8, se_reduction=8))
    assert isinstance(se, EfficientSE) and se.fc1.out_channels == 1


def test_block_with_lambda_se_factory_pickles() -> None:
    """The factory is called, not stored, so even a lambda does not break pickling."""
    block = randomize_(RepViTBlock(6, 6, se_module=lambda c: DynamicSE(c, 2, 6))).eval()
    x = torch.randn(1, 6, 5, 5)
    clone = pickle.loads(pickle.dumps(block))
    with torch.no_grad():
        torch.testing.assert_close(clone(x), block(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"s": 3}, r"s must be one of \[1, 2\], got 3"),
        ({"s": 0}, r"s must be one of \[1, 2\], got 0"),
        ({"kernels": (4,)}, r"kernels must hold only positive odd integers .*got 4 in \(4,\)"),
        ({"kernels": (3, 6)}, r"kernels must hold only positive odd integers .*got 6 in \(3, 6\)"),
        ({"kernels": ()}, r"kernels must be a non-empty sequence of distinct positive odd integers, got \(\)"),
        ({"kernels": 3}, r"kernels must be a non-empty sequence of distinct positive odd integers, got 3"),
        ({"kernels": (3, 5, 3)}, r"kernels must not repeat a kernel size, got \(3, 5, 3\)"),
        ({"se_reduction": 0}, r"se_reduction must be a positive integer, got 0"),
        ({"se_reduction": 9}, r"se_reduction must be a positive integer <= 8 channels, got 9"),
        ({"c1": 0}, r"c1 must be a positive integer, got 0"),
        ({"c2": -2}, r"c2 must be a positive integer, got -2"),
    ],
)
def test_block_rejects_bad_args(kwargs: dict, match: str) -> None:
    args = {"c1": 8, "c2": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        RepViTBlock(**args)


# --- C3k2_RVB_SE ------------------------------------------------------------------------

c3k2_ids = [f"c{c1}-{c2}_n{n}_{se}_k{''.join(map(str, k))}_e{e}_{kind}" for c1, c2, n, se, k, e, kind in C3K2_CASES]


@pytest.mark.parametrize(("c1", "c2", "n", "se", "kernels", "e", "se_kind"), C3K2_CASES, ids=c3k2_ids)
def test_c3k2_fuse_matches(c1, c2, n, se, kernels, e, se_kind) -> None:
    m = _c3k2(c1, c2, n, se, kernels, e, se_kind)
    twin = copy.deepcopy(m).eval()
    x = torch.randn(2, c1, H, W)
    y = assert_fuse_matches(m, x)
    assert y.shape == (2, c2, H, W)
    assert m.cv1.bn is None and m.cv2.bn is None
    assert len(_depthwise_convs(m)) == n
    assert_walker_counts(twin, _expected_walker_count(twin))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("c1", "c2", "n", "se", "kernels", "e", "se_kind"), C3K2_CASES, ids=c3k2_ids)
def test_c3k2_gradients_and_round_trips(c1, c2, n, se, kernels, e, se_kind) -> None:
    m = _c3k2(c1, c2, n, se, kernels, e, se_kind)
    x = torch.randn(2, c1, H, W)
    assert_every_param_gets_grad(m, x)
    assert_roundtrips(m, x)
    reparameterize_model(m.eval())
    assert_roundtrips(m, x)


@pytest.mark.parametrize(("se", "n_se", "se_channels"), [("after_concat", 1, 4 * 6), ("in_blocks", 2, 6),
                                                         ("none", 0, None)])
@pytest.mark.parametrize("se_kind", ["efficient", "dynamic"])
def test_c3k2_se_placement(se: str, n_se: int, se_channels: int | None, se_kind: str) -> None:
    m = C3k2_RVB_SE(10, 12, n=2, se=se, se_module=SE_FACTORIES[se_kind])  # c_ = 6, concat 4 * 6
    assert m.c == 6 and len(m.m) == 2
    assert m.cv1.conv.out_channels == 12 and m.cv2.conv.in_channels == 24
    ses = _se_modules(m)
    assert len(ses) == n_se
    assert all(s.c == se_channels for s in ses)
    assert all(isinstance(s, DynamicSE if se_kind == "dynamic" else EfficientSE) for s in ses)
    assert isinstance(m.cv1.act, nn.SiLU) and isinstance(m.cv2.act, nn.SiLU)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"se": "both"}, r"se must be one of \['none', 'after_concat', 'in_blocks'\], got 'both'"),
        ({"e": 0.01}, r"e must give at least one hidden channel \(int\(c2 \* e\) >= 1, c2=8\), got 0\.01"),
        ({"n": 0}, r"n must be a positive integer, got 0"),
        ({"se_reduction": 0}, r"se_reduction must be a positive integer, got 0"),
        ({"se_reduction": 32}, r"se_reduction must be a positive integer <= 12 channels, got 32"),
        ({"kernels": (2,)}, r"kernels must hold only positive odd integers .*got 2 in \(2,\)"),
    ],
)
def test_c3k2_rejects_bad_args(kwargs: dict, match: str) -> None:
    args = {"c1": 8, "c2": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        C3k2_RVB_SE(**args)
