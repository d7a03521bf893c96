"""Shared helpers for the tests of ``blocks``: randomization and the fuse contract checks.

Import them in a test module of this folder with ``from _helpers import ...`` (pytest puts
this folder on ``sys.path``), or use the fixtures of ``conftest.py``.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import torch
from torch import nn

from blocks import (
    C3k2_RVB_SE,
    ConvBN,
    MultiScaleRepVGGDW,
    OREPAConv,
    QARepConv,
    Reparameterizable,
    RepBlock,
    RepConv,
    RepVGGDW,
    RepViTBlock,
    SEFactory,
    reparameterize_model,
)

__all__ = [
    "EVERY_BLOCK",
    "assert_every_param_gets_grad",
    "assert_fuse_matches",
    "assert_roundtrips",
    "assert_walker_counts",
    "count_bn",
    "count_params",
    "randomize_",
]

RTOL = 1e-4
ATOL = 1e-5

_DYNAMIC_SE = SEFactory("dynamic", min_ratio=2, max_ratio=4)

EVERY_BLOCK: dict[str, tuple[Callable[[], Reparameterizable], int]] = {
    "ConvBN": (lambda: ConvBN(6, 8, 3, 2, 2, act=nn.SiLU()), 6),
    "RepConv": (lambda: RepConv(6, 6, 3), 6),
    "RepConv-s2-g2": (lambda: RepConv(6, 8, 5, 2, 2), 6),
    "RepVGGDW": (lambda: RepVGGDW(6, 5), 6),
    "MultiScaleRepVGGDW": (lambda: MultiScaleRepVGGDW(6, (3, 5, 7)), 6),
    "OREPAConv": (lambda: OREPAConv(6, 8, 3, 1, 2), 6),
    "QARepConv": (lambda: QARepConv(6, 6, 3), 6),
    "QARepConv-s2-g2": (lambda: QARepConv(6, 8, 5, 2, 2), 6),
    "RepViTBlock-s1-SE": (lambda: RepViTBlock(8, 8, 1, se_reduction=2, kernels=(3, 5)), 8),
    "RepViTBlock-s1-DynamicSE": (lambda: RepViTBlock(8, 8, 1, kernels=(3,), se_module=_DYNAMIC_SE), 8),
    "RepViTBlock-s2-SE": (lambda: RepViTBlock(6, 10, 2, se_reduction=2, kernels=(3, 5)), 6),
    "RepViTBlock-s2-DynamicSE": (lambda: RepViTBlock(6, 10, 2, kernels=(3,), se_module=_DYNAMIC_SE), 6),
    "C3k2_RVB_SE-none": (lambda: C3k2_RVB_SE(6, 8, 2, "none", kernels=(3, 5)), 6),
    "C3k2_RVB_SE-after_concat": (lambda: C3k2_RVB_SE(6, 8, 2, "after_concat", 2, kernels=(3,)), 6),
    "C3k2_RVB_SE-in_blocks": (lambda: C3k2_RVB_SE(6, 8, 2, "in_blocks", kernels=(3,), se_module=_DYNAMIC_SE), 6),
    "RepBlock": (lambda: RepBlock(6, 8, 3), 6),
}
"""Every re-parameterizable block (and its SE variants): name -> (factory, input channels)."""


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and every BatchNorm's running stats with random values, in place.

    Parameters get ``N(0, 0.5^2)`` (BN weights ``U(0.5, 1.5)`` so no channel is switched off);
    ``running_mean`` gets ``N(0, 1)`` and ``running_var`` ``U(0.5, 2)`` (positive). With the
    default fresh statistics (mean 0, var 1) a broken fuse can still look correct.
    Returns ``module`` for chaining.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
            else:
                for p in m.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def count_params(module: nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def count_bn(module: nn.Module) -> int:
    """Number of BatchNorm layers (any dimension) inside ``module``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _state_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_fuse_matches(module: Reparameterizable, x: torch.Tensor) -> torch.Tensor:
    """Check the whole re-parameterization contract on a (randomized) ``module`` and input ``x``.

    In eval mode: the fused output equals the unfused one (rtol 1e-4, atol 1e-5), no BatchNorm
    is left, there are fewer parameters, and a second ``reparameterize()`` returns ``False`` and
    leaves the state dict unchanged. Returns the fused output.
    """
    module.eval()
    with torch.no_grad():
        expected = module(x)
    before = count_params(module)
    assert module.reparameterize() is True
    with torch.no_grad():
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    assert count_bn(module) == 0
    assert count_params(module) < before
    snapshot = _state_snapshot(module)
    assert module.reparameterize() is False
    after = _state_snapshot(module)
    assert after.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert torch.equal(after[k], v), k
    return got


def assert_walker_counts(model: nn.Module, expected: int) -> None:
    """``reparameterize_model`` returns ``expected`` on the first call and 0 on the second."""
    model.eval()
    assert reparameterize_model(model) == expected
    assert reparameterize_model(model) == 0


def assert_roundtrips(module: nn.Module, x: torch.Tensor) -> None:
    """A state_dict copy into a deep copy and a pickle round-trip both reproduce the output."""
    module.eval()
    with torch.no_grad():
        expected = module(x)
        twin = copy.deepcopy(module)
        randomize_(twin, seed=123)
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        buf.seek(0)
        twin.load_state_dict(torch.load(buf, weights_only=True))
        torch.testing.assert_close(twin.eval()(x), expected, rtol=0, atol=0)
        clone = pickle.loads(pickle.dumps(module))
        torch.testing.assert_close(clone.eval()(x), expected, rtol=0, atol=0)


def assert_every_param_gets_grad(module: nn.Module, x: torch.Tensor) -> None:
    """In training mode one backward pass gives a finite, non-zero gradient to every parameter."""
    module.train()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
