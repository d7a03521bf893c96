"""Tests of blocks/_fuse.py: the shared fuse helpers, the kernel-set check and the training-mode refusal."""

from __future__ import annotations

import pytest
import torch
from _helpers import EVERY_BLOCK, assert_fuse_matches, count_bn, randomize_
from torch import nn

from blocks import RepConv, reparameterize_model
from blocks._fuse import ConvBN, check_kernel_set, conv_from_weight_bias

TRAINING = r"reparameterize: {} is in training mode; call model\.eval\(\) before fusing \(.*batch statistics"


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# --- training-mode refusal ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(EVERY_BLOCK))
def test_reparameterize_refuses_training_mode_and_changes_nothing(name: str) -> None:
    block = randomize_(EVERY_BLOCK[name][0]()).train()
    before = _state(block)
    with pytest.raises(RuntimeError, match=TRAINING.format(type(block).__name__)):
        block.reparameterize()
    _assert_same_state(block, before)


@pytest.mark.parametrize("name", list(EVERY_BLOCK))
def test_walker_refuses_training_mode_before_fusing_anything(name: str) -> None:
    model = nn.Sequential(randomize_(EVERY_BLOCK[name][0]()), nn.ReLU()).train()
    before, n_bn = _state(model), count_bn(model)
    with pytest.raises(RuntimeError, match=TRAINING.format(type(model[0]).__name__)):
        reparameterize_model(model)
    _assert_same_state(model, before)
    assert count_bn(model) == n_bn


def test_walker_names_a_training_module_below_an_eval_parent() -> None:
    model = nn.Sequential(RepConv(4, 4)).eval()
    model[0].conv_1x1.train()
    with pytest.raises(RuntimeError, match=TRAINING.format("ConvBN")):
        reparameterize_model(model)


def test_partly_fused_block_in_training_mode_still_refuses() -> None:
    """Its ConvBN children are folded, but its identity BN is not: something is left to fuse."""
    block = RepConv(4, 4).eval()
    assert block.conv_kxk.reparameterize() and block.conv_1x1.reparameterize()
    block.train()
    assert not block.is_fused()
    with pytest.raises(RuntimeError, match=TRAINING.format("RepConv")):
        block.reparameterize()


@pytest.mark.parametrize("name", list(EVERY_BLOCK))
def test_fused_block_in_training_mode_is_a_noop(name: str) -> None:
    factory, c = EVERY_BLOCK[name]
    block = randomize_(factory()).eval()
    assert reparameterize_model(block) > 0
    assert block.is_fused()
    x = torch.randn(2, c, 9, 11)
    with torch.no_grad():
        expected = block(x)
    block.train()
    before = _state(block)
    assert block.reparameterize() is False
    assert reparameterize_model(block) == 0
    _assert_same_state(block, before)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), expected, rtol=0, atol=0)


def test_walker_on_a_model_without_blocks_is_a_noop_in_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert reparameterize_model(model) == 0
    assert count_bn(model) == 1


# --- ConvBN and the shared helpers ----------------------------------------------------------


@pytest.mark.parametrize(("c1", "c2", "k", "s", "g"), [(4, 6, 3, 1, 1), (6, 6, 5, 2, 3), (3, 5, 1, 2, 1)])
def test_convbn_fuse_matches(c1: int, c2: int, k: int, s: int, g: int) -> None:
    block = randomize_(ConvBN(c1, c2, k, s, g, act=nn.SiLU()))
    assert_fuse_matches(block, torch.randn(2, c1, 13, 17))
    assert block.conv.bias is not None and block.conv.stride == (s, s) and block.conv.groups == g


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_convbn_fuse_keeps_the_conv_dtype(dtype: torch.dtype) -> None:
    block = randomize_(ConvBN(4, 6, 3)).to(dtype).eval()
    assert block.reparameterize() is True
    assert block.conv.weight.dtype == dtype and block.conv.bias is not None and block.conv.bias.dtype == dtype


def test_conv_from_weight_bias_builds_the_conv_in_the_given_dtype() -> None:
    w, b = torch.randn(8, 2, 3, 3), torch.randn(8)
    conv = conv_from_weight_bias(w, b, stride=2, groups=4, dtype=torch.bfloat16)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (8, 8, 4)
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert conv.weight.dtype == torch.bfloat16 and conv.weight.device == w.device
    assert conv.bias is not None
    assert torch.equal(conv.weight, w.to(torch.bfloat16)) and torch.equal(conv.bias, b.to(torch.bfloat16))


@pytest.mark.parametrize(("kernels", "expected"), [([3], (3,)), ((7, 3, 5), (7, 3, 5)), ([1, 9], (1, 9))])
def test_check_kernel_set_returns_a_tuple(kernels, expected: tuple[int, ...]) -> None:
    assert check_kernel_set(kernels) == expected


@pytest.mark.parametrize(
    ("kernels", "match"),
    [
        ((), r"stage\.kernels must be a non-empty sequence of distinct positive odd integers, got \(\)"),
        (3, r"stage\.kernels must be a non-empty sequence of distinct positive odd integers, got 3"),
        ("35", r"stage\.kernels must be a non-empty sequence of distinct positive odd integers, got '35'"),
        ((3, 4), r"stage\.kernels must hold only positive odd integers \(1, 3, 5, \.\.\.\), got 4 in \(3, 4\)"),
        ((0,), r"stage\.kernels must hold only positive odd integers .*got 0 in \(0,\)"),
        ((-3,), r"stage\.kernels must hold only positive odd integers .*got -3 in \(-3,\)"),
        ((True,), r"stage\.kernels must hold only positive odd integers .*got True in \(True,\)"),
        ((3.0,), r"stage\.kernels must hold only positive odd integers .*got 3\.0 in \(3\.0,\)"),
        ((3, 5, 3), r"stage\.kernels must not repeat a kernel size, got \(3, 5, 3\)"),
    ],
)
def test_check_kernel_set_names_the_field_rule_and_value(kernels, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_kernel_set(kernels, "stage.kernels")
