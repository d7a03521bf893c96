"""OREPA: online convolutional re-parameterization (Hu et al., CVPR 2022).

Unlike RepVGG, whose training form runs every branch on the feature map and sums the
outputs, OREPA keeps only *linear* branches without their own BatchNorm (each branch gets a
learnable per-output-channel scaling vector instead, the paper's "linear scaling") and
squeezes them in weight space at every forward pass into ONE kxk kernel. Training then costs
one conv2d + one BatchNorm on the feature map, no matter how many branches there are: the
branch computations act on kernels, not on activations, so the training step saves roughly
one activation tensor per extra branch compared with RepVGG. The price is kernel-sized work
(``c2 * c1 / g * k^2`` per branch, independent of the input size), so the saving shows when
``batch * H * W`` is large compared with ``c1 / g * k^2`` (early, high-resolution stages,
real batch sizes); at batch 1 on small maps with many channels the two are close.

Our branches (all produce a ``(c2, c1 // g, k, k)`` kernel; groups respected everywhere):

1. ``origin``: a plain kxk kernel.
2. ``pointwise``: a 1x1 kernel zero-padded to kxk.
3. ``sequence``: 1x1 (``c1 -> c1``, initialised to the identity) then kxk, composed by an
   einsum over the intermediate channels within each group.
4. ``average``: a 1x1 kernel composed with kxk average pooling (every tap ``1 / k^2``).
5. ``prior``: a learnable 1x1 kernel times a *fixed* 2-D DCT-II basis; output channel ``o``
   gets the non-constant frequency ``1 + o mod (k^2 - 1)`` (the constant one is the average
   branch), an orthonormal ``k x k`` cosine pattern. This plays the role of the paper's
   frequency prior.
6. ``separable``: a depthwise kxk kernel (one per input channel) then a grouped 1x1,
   composed into a full kernel (the paper's depthwise-separable branch, expansion 1).

``k == 1``: branches 2, 4 and 5 would all be the same 1x1 kernel as ``origin``, so only
``origin``, ``sequence`` (1x1 then 1x1) and ``separable`` (per-channel scale then 1x1) are
built.

Initial branch scales (every entry of the branch's scaling vector), ours and those of the
official code (github.com/JUGGHM/OREPA_CVPR2022, ``blocks.py``, class ``OREPA``, with its
default ``init_hyper_gamma=1``):

=============  =====  ========  ===========================
branch         ours   official  official name
=============  =====  ========  ===========================
``origin``     1      0.25      ``vector[0]`` "origin"
``pointwise``  0.5    1.0       ``vector[4]`` "1x1"
``sequence``   0.5    0.5       ``vector[3]`` "1x1_kxk"
``separable``  0.5    0.5       ``vector[5]`` "dws_conv"
``average``    0.25   0.25      ``vector[1]`` "avg"
``prior``      0.25   0         ``vector[2]`` "prior"
=============  =====  ========  ===========================

One BatchNorm follows the sum (no BN per branch), so in training only the *ratios* of the
scales shape the block's initial function; their size only sets how large each branch's
gradients are. We differ from the official code in two places, on purpose:

- ``origin`` 1 and ``pointwise`` 0.5 instead of 0.25 and 1.0, so a fresh block starts as
  mostly the plain kxk conv it replaces in a stock model, with the other branches as smaller
  corrections. With our kernels' initialisation (PyTorch's default conv init,
  ``kaiming_uniform_(a=sqrt(5))``; separable expansion 1) ``origin`` carries about 60% of
  the squared norm of the initial squeezed kernel (cosine about 0.78 with it) for 16 to 256
  channels at k = 3. The official weighting, with its own init (``kaiming_uniform_(a=0)``,
  separable expansion 8), gives ``origin`` about 3.5% and the 1x1 branch about 55%: the
  official block starts as mostly a 1x1 conv.
- ``prior`` 0.25 instead of 0: at 0 the prior's 1x1 kernel gets no gradient until its scale
  has moved away from 0; non-zero, every parameter learns from the first step.

The other branches start as in the official code. ``k == 1`` keeps the same values for the
three branches it builds.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from blocks._fuse import (
    OneConvReparameterizable,
    check_conv_args,
    check_odd_kernel,
    fold_bn,
    identity_kernel,
    pad_kernel,
)
from blocks.repvgg import resolve_act

__all__ = ["OREPAConv", "dct_prior_basis"]


def _kaiming(*shape: int) -> nn.Parameter:
    """A new parameter of ``shape`` with PyTorch's default conv initialisation."""
    w = torch.empty(*shape)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return nn.Parameter(w)


def dct_prior_basis(channels: int, k: int) -> torch.Tensor:
    """Fixed ``(channels, k, k)`` basis: channel ``o`` is 2-D DCT-II frequency ``1 + o mod (k^2 - 1)``.

    Frequency ``f`` is ``(u, v) = divmod(f, k)`` and the pattern is
    ``a_u a_v cos(pi (2h + 1) u / 2k) cos(pi (2w + 1) v / 2k)`` (orthonormal). The constant
    frequency 0 is skipped; requires ``k >= 3``.
    """
    check_odd_kernel(k, "k")
    if k < 3:
        raise ValueError(f"k must be >= 3 for a non-constant prior basis, got {k}")
    pos = torch.arange(k, dtype=torch.float64)
    freq = torch.arange(k, dtype=torch.float64)
    cos = torch.cos(math.pi * (2 * pos[None, :] + 1) * freq[:, None] / (2 * k))  # (u, h)
    cos[0] *= math.sqrt(1 / k)
    cos[1:] *= math.sqrt(2 / k)
    index = 1 + torch.arange(channels) % (k * k - 1)
    u, v = index // k, index % k
    return (cos[u][:, :, None] * cos[v][:, None, :]).float()


class _Branch(nn.Module):
    """One linear OREPA branch: ``_compose(weight)`` builds its kernel, scaled per output channel.

    ``weight`` is the branch's output-side factor (its first dimension is ``c2``). The scale
    multiplies ``weight`` *before* ``_compose`` expands it to a kxk kernel, so autograd saves
    small tensors (or parameters, which exist anyway) rather than full kernels wherever the
    composition allows it.
    """

    weight: nn.Parameter

    def __init__(self, c2: int, scale: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((c2,), float(scale)))

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        """The ``(c2, c1 // g, k, k)`` kernel of the branch for output-side factor ``weight``."""
        return weight

    def kernel(self) -> torch.Tensor:
        """Unscaled ``(c2, c1 // g, k, k)`` kernel of the branch."""
        return self._compose(self.weight)

    def scaled_kernel(self) -> torch.Tensor:
        """The branch kernel times its per-output-channel scale."""
        return self._compose(self.weight * self.scale.view(-1, 1, 1, 1))


class _Origin(_Branch):
    """A plain kxk kernel."""

    def __init__(self, c1: int, c2: int, k: int, g: int, scale: float):
        super().__init__(c2, scale)
        self.weight = _kaiming(c2, c1 // g, k, k)


class _Pointwise(_Branch):
    """A 1x1 kernel zero-padded to kxk."""

    def __init__(self, c1: int, c2: int, k: int, g: int, scale: float):
        super().__init__(c2, scale)
        self.k = k
        self.weight = _kaiming(c2, c1 // g, 1, 1)

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        return pad_kernel(weight, self.k)


class _Sequence(_Branch):
    """1x1 (``c1 -> c1``, identity + learnable delta) then kxk (``c1 -> c2``), per group."""

    identity: torch.Tensor

    def __init__(self, c1: int, c2: int, k: int, g: int, scale: float):
        super().__init__(c2, scale)
        self.g = g
        self.register_buffer("identity", identity_kernel(c1, g, 1)[:, :, 0, 0], persistent=False)
        self.delta = nn.Parameter(torch.zeros(c1, c1 // g))
        self.weight = _kaiming(c2, c1 // g, k, k)

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        first = self.identity + self.delta  # (mid, c1 // g), mid = c1
        mid, cin = first.shape
        c2, _, k, _ = weight.shape
        first = first.view(self.g, mid // self.g, cin)
        second = weight.view(self.g, c2 // self.g, mid // self.g, k, k)
        return torch.einsum("gmi,gomhw->goihw", first, second).reshape(c2, cin, k, k)


class _Average(_Pointwise):
    """1x1 kernel (as in :class:`_Pointwise`) composed with kxk average pooling: every tap is ``w / k^2``."""

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight / (self.k * self.k)).expand(-1, -1, self.k, self.k)


class _Prior(_Branch):
    """1x1 kernel times a fixed per-output-channel DCT pattern (see :func:`dct_prior_basis`)."""

    basis: torch.Tensor

    def __init__(self, c1: int, c2: int, k: int, g: int, scale: float):
        super().__init__(c2, scale)
        self.register_buffer("basis", dct_prior_basis(c2, k), persistent=False)
        self.weight = _kaiming(c2, c1 // g, 1, 1)

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.basis[:, None, :, :]


class _Separable(_Branch):
    """Depthwise kxk (one filter per input channel) then a grouped 1x1 (``weight``), as one kernel."""

    def __init__(self, c1: int, c2: int, k: int, g: int, scale: float):
        super().__init__(c2, scale)
        self.g = g
        self.depthwise = _kaiming(c1, 1, k, k)
        self.weight = _kaiming(c2, c1 // g, 1, 1)

    def _compose(self, weight: torch.Tensor) -> torch.Tensor:
        _, _, k, _ = self.depthwise.shape
        c2, cin, _, _ = weight.shape
        dw = self.depthwise.view(self.g, 1, cin, k, k)
        pw = weight.view(self.g, c2 // self.g, cin, 1, 1)
        return (pw * dw).reshape(c2, cin, k, k)


def _build_branches(c1: int, c2: int, k: int, g: int) -> nn.ModuleDict:
    """The branches that make sense for kernel size ``k``, with their initial scales."""
    branches: dict[str, _Branch] = {
        "origin": _Origin(c1, c2, k, g, 1.0),
        "sequence": _Sequence(c1, c2, k, g, 0.5),
        "separable": _Separable(c1, c2, k, g, 0.5),
    }
    if k > 1:
        branches["pointwise"] = _Pointwise(c1, c2, k, g, 0.5)
        branches["average"] = _Average(c1, c2, k, g, 0.25)
        branches["prior"] = _Prior(c1, c2, k, g, 0.25)
    return nn.ModuleDict(branches)


class OREPAConv(OneConvReparameterizable):
    """OREPA conv: linear branches squeezed online into one kxk kernel, then BN and activation.

    Training form: ``act(BN(conv2d(x, sum_b scale_b * kernel_b)))``: the branches (see the
    module docstring) are combined in weight space at each forward, so the feature map sees
    ONE conv2d and ONE BatchNorm. This is why OREPA trains with less memory and time than a
    RepVGG-style block of the same shape: no per-branch activations or per-branch BatchNorms
    are stored for the backward pass (the kernel-sized work it adds instead is independent of
    the input size; see the module docstring for when it pays off). Inference form (after :meth:`reparameterize`): the
    squeezed kernel with the BN folded in, i.e. one ``nn.Conv2d`` with bias, then the
    activation. Initial branch scales: ``origin`` 1, ``pointwise``/``sequence``/``separable``
    0.5, ``average``/``prior`` 0.25; the module docstring compares them with the official
    code's (origin 0.25, 1x1 1.0, prior 0) and says why they differ.

    Args: as :class:`blocks.repvgg.RepConv` (``c1, c2, k, s, g, act``); ``k == 1`` keeps only the
    ``origin``, ``sequence`` and ``separable`` branches (the others would duplicate ``origin``).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        check_conv_args(c1, c2, k, s, g)
        self.c1, self.c2, self.k, self.s, self.g = c1, c2, k, s, g
        self.branches: nn.ModuleDict | None = _build_branches(c1, c2, k, g)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2)
        self.act = resolve_act(act)
        self.fused: nn.Conv2d | None = None

    def squeezed_kernel(self) -> torch.Tensor:
        """The ``(c2, c1 // g, k, k)`` kernel equal to the sum of the scaled branches (differentiable)."""
        assert self.branches is not None
        total: torch.Tensor | None = None
        for branch in self.branches.values():
            kernel = cast(_Branch, branch).scaled_kernel()
            total = kernel if total is None else total + kernel  # `+` promotes dtypes under autocast
        assert total is not None
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused conv if present, else one conv with the squeezed kernel, then BN; then act."""
        if self.fused is not None:
            return self.act(self.fused(x))
        assert self.bn is not None
        y = F.conv2d(x, self.squeezed_kernel(), None, self.s, self.k // 2, 1, self.g)
        return self.act(self.bn(y))

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 kxk weight and bias of the single conv equal to the block (eval-mode BN)."""
        assert self.bn is not None
        return fold_bn(self.squeezed_kernel(), None, self.bn)

    def fused_stride_groups(self) -> tuple[int, int]:
        """The block's stride and groups."""
        return self.s, self.g

    def branch_dtype(self) -> torch.dtype:
        """The BatchNorm's dtype."""
        assert self.bn is not None
        return self.bn.weight.dtype

    def drop_branches(self) -> None:
        """Drop the branches and the BatchNorm."""
        self.branches = self.bn = None
