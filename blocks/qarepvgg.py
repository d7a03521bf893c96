"""QARepVGG: the quantization-friendly RepConv (``QARepConv``), a stride-2 conv choice beside RepConv and OREPA.

Plain RepVGG blocks are known to lose accuracy under post-training INT8 quantization (the fused
kernel's weight distribution is wide because the identity and 1x1 branches each carry their own
BatchNorm scale). QARepVGG keeps the three branches but removes BatchNorm from the 1x1 and identity
branches and puts ONE BatchNorm after their sum: ``act(bn(kxk_bn(x) + conv1x1(x) + x))``. All of it
is linear before the activation, so it fuses into one kxk conv with bias like RepConv does.

Reference:
    Chu et al., "Make RepVGG Greater Again: A Quantization-aware Approach", AAAI 2024 (arXiv 2212.01593);
    YOLOv6 3.0 uses it (``QARepVGGBlock``) for its quantization-friendly models.
"""

from __future__ import annotations

import torch
from torch import nn

from blocks._fuse import fold_bn, identity_kernel, pad_kernel
from blocks.repvgg import KxkBranchConv

__all__ = ["QARepConv"]


class QARepConv(KxkBranchConv):
    """``act(bn(kxk_bn(x) + conv_1x1(x) + x))``: BN after the sum, none on the 1x1 and identity branches.

    Training form: a kxk conv+BN (padding ``k // 2``), a 1x1 conv without BN or bias (omitted when
    ``k == 1``), the identity when ``c1 == c2`` and ``s == 1``; summed, then one BatchNorm, then
    the activation. Inference form (after :meth:`reparameterize`): ONE kxk conv with bias, then the
    activation.

    Args:
        c1: input channels.
        c2: output channels.
        k: odd kernel size.
        s: stride.
        g: groups; must divide ``c1`` and ``c2``.
        act: ``True`` for SiLU, ``False``/``None`` for identity, or an ``nn.Module``.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g, act)
        self.conv_1x1: nn.Conv2d | None = nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False) if k > 1 else None
        self.identity = c1 == c2 and s == 1
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused conv if present, else BN of the branches' sum; then the activation."""
        if self.fused is not None:
            return self.act(self.fused(x))
        assert self.conv_kxk is not None and self.bn is not None
        y = self.conv_kxk(x)
        if self.conv_1x1 is not None:
            y = y + self.conv_1x1(x)
        if self.identity:
            y = y + x
        return self.act(self.bn(y))

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 kxk weight and bias of the single conv equal to the block (eval-mode BN)."""
        assert self.conv_kxk is not None and self.bn is not None
        w, b = self.conv_kxk.fused_weight_bias()
        if self.conv_1x1 is not None:
            w = w + pad_kernel(self.conv_1x1.weight.detach().float(), self.k)
        if self.identity:
            w = w + identity_kernel(self.c1, self.g, self.k, device=w.device)
        return fold_bn(w, b, self.bn)

    def drop_branches(self) -> None:
        """Drop the branches and the post-sum BatchNorm (folded into the fused conv)."""
        self.conv_kxk = self.conv_1x1 = self.bn = None
