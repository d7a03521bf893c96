"""RepViT block (Wang et al., "RepViT: Revisiting Mobile CNN From ViT Perspective", CVPR 2024)
and ``C3k2_RVB_SE``, a CSP stage of RepViT blocks shaped like Ultralytics' C2f/C3k2.

A RepViT block separates a *token mixer* (depthwise, spatial) from a *channel mixer*
(pointwise MLP with a residual), like a MetaFormer, but built from convolutions only:

- stride 1: ``RepVGGDW`` (depthwise kxk conv+BN + depthwise 1x1 + identity, then BN) or, with
  several kernels, ``MultiScaleRepVGGDW``; then an optional SE. The identity lives inside
  ``RepVGGDW``, so no extra residual is added around the token mixer.
- stride 2: depthwise kxk stride-2 conv+BN, optional SE, pointwise 1x1 conv+BN ``c1 -> c2``;
  no residual.
- channel mixer: 1x1 conv+BN (expand 2x), GELU, 1x1 conv+BN, with a residual when its input
  and output widths match.

Inference form: the ``RepVGGDW`` collapses to one depthwise conv and every conv+BN folds
into one conv. The SE (non-linear) and the channel mixer's GELU stay, so the block is *not*
a single conv after fusing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from blocks._fuse import ConvBN, Reparameterizable, check_fusable, check_kernel_set, check_positive, fuse_children
from blocks.registry import SE_PLACEMENTS
from blocks.repvgg import MultiScaleRepVGGDW, RepVGGDW
from blocks.se import EfficientSE

__all__ = ["C3k2_RVB_SE", "ChannelMixer", "RepViTBlock"]


def build_se(channels: int, se_reduction: int, se_module: Callable[[int], nn.Module] | None) -> nn.Module:
    """SE over ``channels``: ``se_module(channels)`` when given, else ``EfficientSE(channels, se_reduction)``."""
    if se_module is not None:
        return se_module(channels)
    if se_reduction > channels:
        raise ValueError(f"se_reduction must be a positive integer <= {channels} channels, got {se_reduction!r}")
    return EfficientSE(channels, se_reduction)


def reparameterize_container(module: Reparameterizable) -> bool:
    """Fuse every re-parameterizable module below ``module`` (children first); whether any changed.

    ``False`` without a mode check when all of them are fused already; otherwise
    :func:`blocks._fuse.check_fusable` refuses a module in training mode before anything changes.
    """
    if module.is_fused():
        return False
    check_fusable(module)
    return fuse_children(module) > 0


class ChannelMixer(nn.Module):
    """Pointwise MLP ``1x1 conv+BN (c1 -> hidden), GELU, 1x1 conv+BN (hidden -> c2)``, residual if ``c1 == c2``.

    With a residual, the last BN's weight starts at zero (as in RepViT), so the block starts
    as its token mixer alone. The GELU makes it non-linear, so only the two conv+BN pairs fuse
    (each into one conv, via the walker); the MLP itself stays.
    """

    def __init__(self, c1: int, hidden: int, c2: int):
        super().__init__()
        self.residual = c1 == c2
        self.pw1 = ConvBN(c1, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = ConvBN(hidden, c2, 1)
        if self.residual and self.pw2.bn is not None:
            nn.init.zeros_(self.pw2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP, plus ``x`` when the widths match."""
        y = self.pw2(self.act(self.pw1(x)))
        return x + y if self.residual else y


def _token_mixer(c1: int, c2: int, s: int, kernels: tuple[int, ...], se: nn.Module) -> nn.Sequential:
    """RepViT token mixer: ``(Multi)RepVGGDW, SE`` for ``s == 1``; ``DW stride 2, SE, 1x1 c1 -> c2`` otherwise."""
    if s == 1:
        dw = RepVGGDW(c1, kernels[0]) if len(kernels) == 1 else MultiScaleRepVGGDW(c1, kernels)
        return nn.Sequential(dw, se)
    k = max(kernels)
    return nn.Sequential(ConvBN(c1, c1, k, s=2, g=c1), se, ConvBN(c1, c2, 1))


class RepViTBlock(Reparameterizable):
    """RepViT block: token mixer (depthwise + optional SE), then a residual channel-mixer MLP.

    Shapes: ``(B, c1, H, W) -> (B, c2, H / s, W / s)`` (``ceil`` for odd sizes with ``s == 2``).

    - ``s == 1``: token mixer ``RepVGGDW(c1, k)`` (one kernel) or ``MultiScaleRepVGGDW(c1,
      kernels)`` (several), then SE, all on ``c1`` channels (the identity is inside
      ``RepVGGDW``). Channel mixer ``c1 -> 2*c1 -> c2``, residual when ``c1 == c2``. When
      ``c1 != c2`` the channel mixer does the width change and has **no** residual (the
      official RepViT only allows ``c1 == c2`` at stride 1).
    - ``s == 2``: token mixer depthwise ``max(kernels)`` stride-2 conv+BN, SE, 1x1 conv+BN
      ``c1 -> c2`` (no residual); channel mixer ``c2 -> 2*c2 -> c2`` with residual.

    Fused form (:meth:`reparameterize`): the ``RepVGGDW`` becomes one depthwise conv and every
    conv+BN one conv; SE and GELU are non-linear and stay.

    Args:
        c1: input channels.
        c2: output channels.
        s: stride, 1 or 2.
        se: whether the token mixer has an SE.
        se_reduction: reduction of the default ``EfficientSE`` (ignored with ``se_module``).
        kernels: depthwise kernel sizes (odd, distinct); several give a multi-scale mixer at
            stride 1 and the largest is used at stride 2.
        se_module: factory ``channels -> nn.Module`` used instead of ``EfficientSE``; usually a
            :class:`blocks.se.SEFactory` (fixed or dynamic SE, ratios clamped to the channels),
            but any callable works. It is called, not stored, so the block pickles even when
            it is a lambda.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        s: int = 1,
        se: bool = True,
        se_reduction: int = 4,
        kernels: Sequence[int] = (3,),
        se_module: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        check_positive(c1, "c1")
        check_positive(c2, "c2")
        if s not in (1, 2) or isinstance(s, bool):
            raise ValueError(f"s must be one of [1, 2], got {s!r}")
        check_positive(se_reduction, "se_reduction")
        kernels = check_kernel_set(kernels)
        self.c1, self.c2, self.s, self.kernels = c1, c2, s, kernels
        se_layer = build_se(c1, se_reduction, se_module) if se else nn.Identity()
        self.token_mixer = _token_mixer(c1, c2, s, kernels, se_layer)
        cm = c1 if s == 1 else c2
        self.channel_mixer = ChannelMixer(cm, 2 * cm, c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token mixer, then channel mixer."""
        return self.channel_mixer(self.token_mixer(x))

    def reparameterize(self) -> bool:
        """Fuse the depthwise re-param branch and fold every conv+BN; ``False`` if already fused."""
        return reparameterize_container(self)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, c2={self.c2}, s={self.s}, kernels={self.kernels}"


class C3k2_RVB_SE(Reparameterizable):  # noqa: N801 - Ultralytics-style module name
    """CSP stage of RepViT blocks with squeeze-excitation, shaped like Ultralytics' C2f/C3k2.

    ``cv1`` (1x1 conv+BN+SiLU, ``c1 -> 2*c_`` with ``c_ = int(c2 * e)``) is split into two
    halves; ``n`` stride-1 ``RepViTBlock(c_, c_)`` are chained on the second half and every
    intermediate output is kept, as in C2f; the ``(2 + n) * c_`` channels are concatenated,
    optionally gated by an SE, and ``cv2`` (1x1 conv+BN+SiLU) maps them to ``c2``.

    Where the SE goes (``se``):

    - ``"after_concat"``: one SE over the ``(2 + n) * c_`` concatenated channels; the blocks have none.
    - ``"in_blocks"``: an SE in every block's token mixer (on ``c_`` channels).
    - ``"none"``: no SE.

    Fused form: every block fused (see :class:`RepViTBlock`) and ``cv1``/``cv2`` folded; the SE stays.

    Args:
        c1: input channels.
        c2: output channels.
        n: number of RepViT blocks (>= 1).
        se: SE placement, one of :data:`blocks.registry.SE_PLACEMENTS`.
        se_reduction: reduction of the default ``EfficientSE`` (ignored with ``se_module``).
        kernels: depthwise kernel sizes of the blocks.
        e: hidden width ratio, ``c_ = int(c2 * e)`` must be >= 1.
        se_module: factory ``channels -> nn.Module`` replacing ``EfficientSE`` (not stored);
            usually a :class:`blocks.se.SEFactory`.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        se: str = "after_concat",
        se_reduction: int = 4,
        kernels: Sequence[int] = (3,),
        e: float = 0.5,
        se_module: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        check_positive(c1, "c1")
        check_positive(c2, "c2")
        check_positive(n, "n")
        check_positive(se_reduction, "se_reduction")
        if se not in SE_PLACEMENTS:
            raise ValueError(f"se must be one of {list(SE_PLACEMENTS)}, got {se!r}")
        c_ = int(c2 * e)
        if c_ < 1:
            raise ValueError(f"e must give at least one hidden channel (int(c2 * e) >= 1, c2={c2}), got {e!r}")
        self.c = c_
        self.se_placement = se
        self.cv1 = ConvBN(c1, 2 * c_, 1, act=nn.SiLU())
        self.m = nn.ModuleList(
            RepViTBlock(c_, c_, 1, se == "in_blocks", se_reduction, kernels, se_module) for _ in range(n)
        )
        cat = (2 + n) * c_
        self.se = build_se(cat, se_reduction, se_module) if se == "after_concat" else nn.Identity()
        self.cv2 = ConvBN(cat, c2, 1, act=nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split, run the chained blocks, concatenate everything, SE, project to ``c2``."""
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(self.se(torch.cat(y, 1)))

    def reparameterize(self) -> bool:
        """Fuse every block and fold ``cv1``/``cv2``; ``False`` if already fused."""
        return reparameterize_container(self)

    def extra_repr(self) -> str:
        return f"c_={self.c}, n={len(self.m)}, se={self.se_placement!r}"
