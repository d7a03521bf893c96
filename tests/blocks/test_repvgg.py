"""Tests of blocks/repvgg.py: RepConv, RepVGGDW, MultiScaleRepVGGDW fuse exactly and safely."""

from __future__ import annotations

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

from blocks import MultiScaleRepVGGDW, RepConv, RepVGGDW, reparameterize_model
from blocks._fuse import ConvBN
from blocks.repvgg import resolve_act

# (c1, c2, k, s, g): identity branch on/off, c1 != c2, strides, groups, odd channels, k = 1..7.
REPCONV_CONFIGS = [
    (4, 4, 3, 1, 1),
    (3, 5, 3, 1, 1),
    (5, 5, 1, 1, 1),
    (3, 7, 1, 2, 1),
    (6, 6, 5, 1, 2),
    (6, 4, 7, 2, 2),
    (5, 5, 3, 2, 1),
    (6, 6, 3, 1, 6),
    (4, 8, 5, 2, 4),
]


def _x(c: int, batch: int = 2, h: int = 13, w: int = 17) -> torch.Tensor:
    return torch.randn(batch, c, h, w)


@pytest.mark.parametrize(("c1", "c2", "k", "s", "g"), REPCONV_CONFIGS)
def test_repconv_fuse_matches(c1: int, c2: int, k: int, s: int, g: int) -> None:
    m = randomize_(RepConv(c1, c2, k, s, g))
    y = assert_fuse_matches(m, _x(c1))
    assert y.shape == (2, c2, (13 - 1) // s + 1, (17 - 1) // s + 1)
    assert isinstance(m.fused, nn.Conv2d)
    assert m.fused.kernel_size == (k, k) and m.fused.groups == g and m.fused.stride == (s, s)
    assert [n for n, _ in m.named_children()] == ["act", "fused"]


def test_repconv_branches_follow_the_rules() -> None:
    assert RepConv(4, 4, 3, 1).bn_identity is not None
    assert RepConv(4, 4, 3, 2).bn_identity is None
    assert RepConv(4, 6, 3, 1).bn_identity is None
    assert RepConv(4, 4, 1, 1).conv_1x1 is None
    assert RepConv(4, 4, 3, 1).conv_1x1 is not None


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_repvggdw_fuse_matches(k: int) -> None:
    m = randomize_(RepVGGDW(5, k))
    assert_fuse_matches(m, _x(5))
    assert m.fused is not None and m.fused.groups == 5 and m.fused.kernel_size == (k, k)


@pytest.mark.parametrize("kernels", [(3, 5, 7), (7, 3), (1, 5), (5,)])
def test_multiscale_fuse_matches_with_one_conv(kernels: tuple[int, ...]) -> None:
    m = randomize_(MultiScaleRepVGGDW(7, kernels))
    assert_fuse_matches(m, _x(7))
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert convs == [m.fused]
    assert m.fused.kernel_size == (max(kernels),) * 2 and m.fused.groups == 7


def test_fused_output_is_not_trivially_equal_to_unfused_bn_free_path() -> None:
    """Guard against a test that cannot fail: dropping a branch breaks the match."""
    m = randomize_(RepConv(4, 4, 3, 1)).eval()
    x = _x(4)
    with torch.no_grad():
        expected = m(x)
    m.bn_identity = None
    m.reparameterize()
    with torch.no_grad():
        assert not torch.allclose(m(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        # RepConv: its two ConvBN children, then itself.
        (lambda: RepConv(4, 4, 3), 3),
        (lambda: RepConv(4, 4, 1), 2),
        # RepVGGDW: its ConvBN child, then itself.
        (lambda: RepVGGDW(4, 3), 2),
        # Multi-scale: per branch (ConvBN + RepVGGDW), then itself.
        (lambda: MultiScaleRepVGGDW(4, (3, 5, 7)), 7),
    ],
)
def test_walker_counts_then_zero_and_matches(factory, expected: int) -> None:
    model = nn.Sequential(randomize_(factory()), nn.ReLU()).eval()
    x = _x(4)
    with torch.no_grad():
        before = model(x)
    assert_walker_counts(model, expected)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


def test_walker_count_equals_number_of_reparameterizable_modules() -> None:
    model = nn.Sequential(RepConv(4, 4), RepVGGDW(4), MultiScaleRepVGGDW(4, (3, 5))).eval()
    n = sum(isinstance(m, (RepConv, RepVGGDW, MultiScaleRepVGGDW, ConvBN)) for m in model.modules())
    assert reparameterize_model(model) == n
    assert reparameterize_model(model) == 0


@pytest.mark.parametrize(
    "factory",
    [lambda: RepConv(4, 4, 3), lambda: RepConv(3, 6, 5, 2, 3), lambda: RepVGGDW(3, 5),
     lambda: MultiScaleRepVGGDW(3, (3, 5))],
)
@pytest.mark.parametrize("fused", [False, True])
def test_state_dict_and_pickle_roundtrip(factory, fused: bool) -> None:
    m = randomize_(factory()).eval()
    if fused:
        m.reparameterize()
    c = m.c1 if isinstance(m, RepConv) else m.c
    assert_roundtrips(m, _x(c))


@pytest.mark.parametrize(
    "factory",
    [lambda: RepConv(4, 4, 3), lambda: RepConv(4, 6, 1, 2, 2), lambda: RepVGGDW(4, 3),
     lambda: MultiScaleRepVGGDW(4, (3, 5, 7))],
)
def test_training_backward_reaches_every_branch(factory) -> None:
    m = factory()
    c = m.c1 if isinstance(m, RepConv) else m.c
    assert_every_param_gets_grad(m, _x(c, batch=2, h=9, w=11))


def test_fuse_reduces_parameters() -> None:
    m = RepConv(8, 8, 3).eval()
    before = count_params(m)
    m.reparameterize()
    assert count_params(m) == 8 * 8 * 9 + 8 < before


def test_act_argument() -> None:
    assert isinstance(RepConv(2, 2).act, nn.SiLU)
    assert isinstance(RepConv(2, 2, act=False).act, nn.Identity)
    assert isinstance(RepConv(2, 2, act=nn.ReLU()).act, nn.ReLU)
    with pytest.raises(ValueError, match=r"act must be a bool, None or an nn.Module, got 'relu'"):
        resolve_act("relu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: RepConv(4, 4, 2), r"k must be a positive odd integer .*got 2"),
        (lambda: RepConv(4, 4, 0), r"k must be a positive odd integer .*got 0"),
        (lambda: RepConv(4, 6, 3, 1, 4), r"g must divide c1 and c2 \(c1=4, c2=6\), got g=4"),
        (lambda: RepConv(0, 4), r"c1 must be a positive integer, got 0"),
        (lambda: RepConv(4, -1), r"c2 must be a positive integer, got -1"),
        (lambda: RepConv(4, 4, 3, 0), r"s must be a positive integer, got 0"),
        (lambda: RepVGGDW(4, 4), r"k must be a positive odd integer .*got 4"),
        (lambda: RepVGGDW(0, 3), r"c must be a positive integer, got 0"),
        (lambda: MultiScaleRepVGGDW(4, ()), r"kernels must be a non-empty sequence .*got \(\)"),
        (lambda: MultiScaleRepVGGDW(4, (3, 4)), r"kernels must hold only positive odd integers .*got 4 in \(3, 4\)"),
        (lambda: MultiScaleRepVGGDW(4, (3, 5, 3)), r"kernels must not repeat a kernel size, got \(3, 5, 3\)"),
        (lambda: MultiScaleRepVGGDW(-2), r"c must be a positive integer, got -2"),
    ],
)
def test_bad_arguments_raise(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(
    "factory", [lambda: RepConv(4, 4, 3), lambda: RepVGGDW(4, 3), lambda: MultiScaleRepVGGDW(4, (3, 5))]
)
def test_fuse_keeps_the_parameter_dtype(factory) -> None:
    m = randomize_(factory()).to(torch.float64).eval()
    x = _x(4).double()
    with torch.no_grad():
        expected = m(x)
    m.reparameterize()  # folded in float32, cast back once
    assert m.fused.weight.dtype == torch.float64 and m.fused.bias.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
