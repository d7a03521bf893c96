"""RepVGG-family blocks: ``RepConv``, ``RepVGGDW`` and ``MultiScaleRepVGGDW``.

Each block trains as a sum of linear branches (kxk conv+BN, 1x1 conv+BN, identity BN ...)
and :meth:`reparameterize` folds them, in place, into ONE conv with bias (plus the
activation for ``RepConv``). All branches are linear until the final sum, so the fuse is
exact (up to float rounding) for an eval-mode module.

References:
    Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021.
    Wang et al., "RepViT: Revisiting Mobile CNN From ViT Perspective", CVPR 2024
    (``RepVGGDW``: depthwise kxk conv+BN + depthwise 1x1 conv + identity, then one BN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from blocks._fuse import (
    ConvBN,
    OneConvReparameterizable,
    check_conv_args,
    check_kernel_set,
    check_odd_kernel,
    check_positive,
    conv_weight_bias,
    fold_bn,
    identity_kernel,
    pad_kernel,
)

__all__ = ["KxkBranchConv", "MultiScaleRepVGGDW", "RepConv", "RepVGGDW", "resolve_act"]


def resolve_act(act: bool | nn.Module | None) -> nn.Module:
    """Activation module for an Ultralytics-style ``act`` argument.

    ``True`` gives ``nn.SiLU()``, ``False`` or ``None`` gives ``nn.Identity()``, a module is
    used as is; anything else raises ``ValueError``.
    """
    if act is True:
        return nn.SiLU()
    if act is False or act is None:
        return nn.Identity()
    if isinstance(act, nn.Module):
        return act
    raise ValueError(f"act must be a bool, None or an nn.Module, got {act!r}")


class KxkBranchConv(OneConvReparameterizable):
    """Base of the blocks whose fused conv is their kxk branch's shape (``RepConv``, ``QARepConv``): the kxk
    conv+BN branch, the activation, and the fused conv's stride, groups and dtype. Subclasses add their branches."""

    def __init__(self, c1: int, c2: int, k: int, s: int, g: int, act: bool | nn.Module):
        super().__init__()
        check_conv_args(c1, c2, k, s, g)
        self.c1, self.c2, self.k, self.s, self.g = c1, c2, k, s, g
        self.conv_kxk: ConvBN | None = ConvBN(c1, c2, k, s, g)
        self.act = resolve_act(act)
        self.fused: nn.Conv2d | None = None

    def fused_stride_groups(self) -> tuple[int, int]:
        """The kxk conv's stride and groups."""
        return self.s, self.g

    def branch_dtype(self) -> torch.dtype:
        """The kxk conv's dtype."""
        assert self.conv_kxk is not None
        return self.conv_kxk.conv.weight.dtype


class RepConv(KxkBranchConv):
    """RepVGG / YOLOv6-v7 re-parameterizable conv: ``act(kxk_bn(x) + 1x1_bn(x) + bn(x))``.

    Training form: a kxk conv+BN (padding ``k // 2``), a 1x1 conv+BN (padding 0, same stride so
    both outputs align; omitted when ``k == 1`` since it would duplicate the kxk branch), and
    an identity BatchNorm branch when ``c1 == c2`` and ``s == 1``. The branches are summed,
    then the activation is applied. Inference form (after :meth:`reparameterize`): ONE kxk
    conv with bias, then the activation.

    Args:
        c1: input channels.
        c2: output channels.
        k: odd kernel size (1, 3, 5, ...).
        s: stride.
        g: groups; must divide ``c1`` and ``c2``.
        act: ``True`` for SiLU, ``False``/``None`` for identity, or an ``nn.Module``.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g, act)
        self.conv_1x1: ConvBN | None = ConvBN(c1, c2, 1, s, g) if k > 1 else None
        self.bn_identity: nn.BatchNorm2d | None = nn.BatchNorm2d(c1) if c1 == c2 and s == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused conv if present, else the sum of the branches; then the activation."""
        if self.fused is not None:
            return self.act(self.fused(x))
        assert self.conv_kxk is not None
        y = self.conv_kxk(x)
        if self.conv_1x1 is not None:
            y = y + self.conv_1x1(x)
        if self.bn_identity is not None:
            y = y + self.bn_identity(x)
        return self.act(y)

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 kxk weight and bias of the single conv equal to all branches (eval-mode BN)."""
        assert self.conv_kxk is not None
        w, b = self.conv_kxk.fused_weight_bias()
        if self.conv_1x1 is not None:
            w1, b1 = self.conv_1x1.fused_weight_bias()
            w, b = w + pad_kernel(w1, self.k), b + b1
        if self.bn_identity is not None:
            wid = identity_kernel(self.c1, self.g, self.k, device=w.device)
            wi, bi = fold_bn(wid, None, self.bn_identity)
            w, b = w + wi, b + bi
        return w, b

    def drop_branches(self) -> None:
        """Drop the kxk, 1x1 and identity branches."""
        self.conv_kxk = self.conv_1x1 = self.bn_identity = None


class RepVGGDW(OneConvReparameterizable):
    """RepViT's depthwise token mixer: ``BN(dw_kxk_bn(x) + dw_1x1(x) + x)``.

    Training form: a depthwise kxk conv+BN, a depthwise 1x1 conv with bias (no BN; omitted
    when ``k == 1``), the identity, and one BatchNorm over the sum; no activation. Inference
    form: ONE depthwise kxk conv with bias (the outer BN folded in as well).

    Args:
        c: channels (input = output).
        k: odd kernel size of the depthwise conv.
    """

    def __init__(self, c: int, k: int = 3):
        super().__init__()
        check_positive(c, "c")
        check_odd_kernel(k, "k")
        self.c, self.k = c, k
        self.conv: ConvBN | None = ConvBN(c, c, k, 1, c)
        self.conv1: nn.Conv2d | None = nn.Conv2d(c, c, 1, 1, 0, groups=c, bias=True) if k > 1 else None
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused depthwise conv if present, else ``BN(conv(x) + conv1(x) + x)``."""
        if self.fused is not None:
            return self.fused(x)
        assert self.conv is not None and self.bn is not None
        y = self.conv(x) + x
        if self.conv1 is not None:
            y = y + self.conv1(x)
        return self.bn(y)

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 depthwise kxk weight ``(c, 1, k, k)`` and bias equal to the block (eval-mode BN)."""
        assert self.conv is not None and self.bn is not None
        w, b = self.conv.fused_weight_bias()
        if self.conv1 is not None:
            w1, b1 = conv_weight_bias(self.conv1)
            w, b = w + pad_kernel(w1, self.k), b + b1
        w = w + identity_kernel(self.c, self.c, self.k, device=w.device)
        return fold_bn(w, b, self.bn)

    def fused_stride_groups(self) -> tuple[int, int]:
        """Stride 1, depthwise."""
        return 1, self.c

    def branch_dtype(self) -> torch.dtype:
        """The outer BatchNorm's dtype."""
        assert self.bn is not None
        return self.bn.weight.dtype

    def drop_branches(self) -> None:
        """Drop the kxk conv+BN, the 1x1 conv and the outer BN."""
        self.conv = self.conv1 = self.bn = None


class MultiScaleRepVGGDW(OneConvReparameterizable):
    """Mean of :class:`RepVGGDW` branches with different kernel sizes (multi-scale token mixer).

    ``y = mean_k RepVGGDW_k(x)``. Inference form: ONE depthwise conv with the largest kernel;
    each branch is fused, its kernel zero-padded to the largest size, and the kernels and
    biases averaged.

    Args:
        c: channels (input = output).
        kernels: odd, unique kernel sizes, at least one (default ``(3, 5, 7)``).
    """

    def __init__(self, c: int, kernels: Sequence[int] = (3, 5, 7)):
        super().__init__()
        check_positive(c, "c")
        self.c = c
        self.kernels = check_kernel_set(kernels)
        self.branches: nn.ModuleList | None = nn.ModuleList(RepVGGDW(c, k) for k in self.kernels)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused depthwise conv if present, else the mean of the branches."""
        if self.fused is not None:
            return self.fused(x)
        assert self.branches is not None
        y = self.branches[0](x)
        for branch in self.branches[1:]:
            y = y + branch(x)
        return y / len(self.branches)

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 depthwise weight ``(c, 1, K, K)`` (``K`` the largest kernel) and bias."""
        assert self.branches is not None
        big = max(self.kernels)
        pairs = [cast(RepVGGDW, branch).fused_weight_bias() for branch in self.branches]
        w = torch.stack([pad_kernel(wk, big) for wk, _ in pairs]).mean(0)
        b = torch.stack([bk for _, bk in pairs]).mean(0)
        return w, b

    def fused_stride_groups(self) -> tuple[int, int]:
        """Stride 1, depthwise."""
        return 1, self.c

    def branch_dtype(self) -> torch.dtype:
        """The branches' dtype."""
        assert self.branches is not None
        return next(self.branches.parameters()).dtype

    def drop_branches(self) -> None:
        """Drop every kernel-size branch."""
        self.branches = None
