"""Tests of blocks/orepa.py: the online squeeze is right per branch and the fuse is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import (
    assert_every_param_gets_grad,
    assert_fuse_matches,
    assert_roundtrips,
    assert_walker_counts,
    randomize_,
)
from torch import nn

from blocks import OREPAConv, RepConv
from blocks.orepa import dct_prior_basis
from trainers.train.memory import saved_tensor_bytes

# (c1, c2, k, s, g): k = 1..7, strides, c1 != c2, groups, odd channel counts.
CONFIGS = [
    (4, 4, 3, 1, 1),
    (3, 5, 3, 2, 1),
    (5, 7, 1, 1, 1),
    (6, 4, 1, 2, 2),
    (6, 6, 5, 1, 3),
    (4, 6, 7, 2, 2),
    (7, 7, 3, 1, 7),
]


def _x(c: int, batch: int = 2, h: int = 13, w: int = 17) -> torch.Tensor:
    return torch.randn(batch, c, h, w)


@pytest.mark.parametrize(("c1", "c2", "k", "s", "g"), CONFIGS)
def test_fuse_matches_one_conv(c1: int, c2: int, k: int, s: int, g: int) -> None:
    m = randomize_(OREPAConv(c1, c2, k, s, g))
    y = assert_fuse_matches(m, _x(c1))
    assert y.shape == (2, c2, (13 - 1) // s + 1, (17 - 1) // s + 1)
    assert [n for n, _ in m.named_children()] == ["act", "fused"]
    assert m.fused is not None and m.fused.kernel_size == (k, k) and m.fused.groups == g


def test_branches_present_per_kernel_size() -> None:
    full = {"origin", "sequence", "separable", "pointwise", "average", "prior"}
    assert set(OREPAConv(4, 4, 3).branches) == full
    assert set(OREPAConv(4, 4, 1).branches) == {"origin", "sequence", "separable"}


def _branch_reference(name: str, branch: nn.Module, x: torch.Tensor, k: int, s: int, g: int) -> torch.Tensor:
    """What the branch computes on the feature map, op by op (no weight-space squeeze)."""
    p = k // 2
    if name == "origin":
        return F.conv2d(x, branch.weight, None, s, p, 1, g)
    if name == "pointwise":
        return F.conv2d(x, branch.weight, None, s, 0, 1, g)
    if name == "sequence":
        first = (branch.identity + branch.delta)[:, :, None, None]
        return F.conv2d(F.conv2d(x, first, None, 1, 0, 1, g), branch.weight, None, s, p, 1, g)
    if name == "average":
        y = F.conv2d(x, branch.weight, None, 1, 0, 1, g)
        return F.avg_pool2d(y, k, s, p, count_include_pad=True)
    if name == "separable":
        y = F.conv2d(x, branch.depthwise, None, s, p, 1, x.shape[1])
        return F.conv2d(y, branch.weight, None, 1, 0, 1, g)
    raise AssertionError(name)


@pytest.mark.parametrize(("c1", "c2", "k", "s", "g"), [(4, 6, 3, 1, 2), (6, 6, 5, 2, 3), (3, 5, 1, 2, 1)])
def test_each_squeezed_branch_equals_its_feature_map_form(c1: int, c2: int, k: int, s: int, g: int) -> None:
    m = randomize_(OREPAConv(c1, c2, k, s, g))
    x = _x(c1)
    with torch.no_grad():
        for name, branch in m.branches.items():
            if name == "prior":
                continue  # no feature-map form of its own; its basis is tested below
            got = F.conv2d(x, branch.kernel(), None, s, k // 2, 1, g)
            torch.testing.assert_close(got, _branch_reference(name, branch, x, k, s, g), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_prior_basis_is_orthonormal_and_not_constant(k: int) -> None:
    n = k * k - 1
    basis = dct_prior_basis(2 * n, k).reshape(2 * n, -1).double()
    torch.testing.assert_close(basis[:n] @ basis[:n].T, torch.eye(n, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis[n:], basis[:n])  # frequencies cycle over the channels
    torch.testing.assert_close(basis.sum(1), torch.zeros(2 * n, dtype=torch.float64), atol=1e-6, rtol=0)


def test_training_forward_is_one_conv_on_the_feature_map() -> None:
    m = OREPAConv(4, 4, 3).train()
    m(_x(4))  # the squeezed kernel equals the scaled sum of the branch kernels
    with torch.no_grad():
        expected = sum(b.kernel() * b.scale.view(-1, 1, 1, 1) for b in m.branches.values())
        torch.testing.assert_close(m.squeezed_kernel(), expected)


def test_initial_scales_origin_one_others_smaller_nonzero() -> None:
    m = OREPAConv(4, 4, 3)
    assert torch.equal(m.branches["origin"].scale, torch.ones(4))
    for name, b in m.branches.items():
        if name != "origin":
            assert 0 < b.scale.min() and b.scale.max() < 1, name


@pytest.mark.parametrize("k", [1, 3])
def test_training_backward_reaches_every_branch(k: int) -> None:
    m = OREPAConv(4, 6, k, 2, 2)  # default init: every scale non-zero
    assert_every_param_gets_grad(m, _x(4, h=9, w=11))


@pytest.mark.parametrize("fused", [False, True])
def test_state_dict_and_pickle_roundtrip(fused: bool) -> None:
    m = randomize_(OREPAConv(4, 6, 3, 2, 2)).eval()
    if fused:
        m.reparameterize()
    assert_roundtrips(m, _x(4))


def test_walker_counts_then_zero() -> None:
    model = nn.Sequential(randomize_(OREPAConv(4, 4, 3)), randomize_(OREPAConv(4, 4, 1))).eval()
    x = _x(4)
    with torch.no_grad():
        before = model(x)
    assert_walker_counts(model, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)


def test_orepa_saves_less_for_backward_than_repconv() -> None:
    """The claim of the docstring: one conv + one BN on the feature map, not one per branch."""
    x = _x(8, batch=4, h=64, w=64).requires_grad_()
    orepa = saved_tensor_bytes(OREPAConv(8, 8, 3).train(), x)
    repconv = saved_tensor_bytes(RepConv(8, 8, 3).train(), x)
    feature_map = x.numel() * x.element_size()
    # RepConv keeps x, the kxk and 1x1 conv outputs (for their BNs) and the sum (for SiLU);
    # OREPA keeps x, one conv output and the BN output, plus two kernel-sized tensors.
    assert 4 * feature_map <= repconv < 4.01 * feature_map  # (+ BN batch statistics)
    assert repconv - orepa > 0.95 * feature_map


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"c1": 4, "c2": 4, "k": 2}, r"k must be a positive odd integer .*got 2"),
        ({"c1": 4, "c2": 6, "g": 4}, r"g must divide c1 and c2 \(c1=4, c2=6\), got g=4"),
        ({"c1": 0, "c2": 4}, r"c1 must be a positive integer, got 0"),
        ({"c1": 4, "c2": 0}, r"c2 must be a positive integer, got 0"),
        ({"c1": 4, "c2": 4, "s": 0}, r"s must be a positive integer, got 0"),
        ({"c1": 4, "c2": 4, "act": "silu"}, r"act must be a bool, None or an nn.Module, got 'silu'"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OREPAConv(**kwargs)


def test_prior_basis_rejects_k1() -> None:
    with pytest.raises(ValueError, match=r"k must be >= 3 for a non-constant prior basis, got 1"):
        dct_prior_basis(4, 1)


def test_fuse_keeps_the_parameter_dtype() -> None:
    m = randomize_(OREPAConv(4, 6, 3, 2, 2)).to(torch.float64).eval()
    x = _x(4).double()
    with torch.no_grad():
        expected = m(x)
    m.reparameterize()
    assert m.fused.weight.dtype == torch.float64 and m.fused.bias.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
