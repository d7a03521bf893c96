"""``RepBlock``: a RepVGG stage, n stacked 3x3 ``RepConv`` blocks (YOLOv6 EfficientRep's RepBlock).

``RepBlock(c1, c2, n)`` is ``RepConv(c1, c2)`` followed by ``n - 1`` ``RepConv(c2, c2)``, all 3x3,
stride 1. Each ``RepConv`` trains as ``act(3x3 conv+BN + 1x1 conv+BN + identity BN)``; the
identity BatchNorm branch is the block's residual (RepVGG's identity shortcut, ``x`` scaled per
channel by a BN), present in every block whose input and output widths match: every block after
the first, and the first too when ``c1 == c2``. The shortcut sits *inside* the activation, so it
folds into the 3x3 kernel with the other branches: after :meth:`RepBlock.reparameterize` the stage
is ``n`` plain 3x3 convs with bias, each followed by its activation (a VGG-style stack), and
nothing of the training-time branches is left.

This is the structure of YOLOv6's ``RepBlock(in_channels, out_channels, n, block=RepVGGBlock)``
(``yolov6/layers/common.py``: ``conv1`` then ``n - 1`` blocks), and of a stage of RepVGG
(Ding et al., CVPR 2021) without its stride-2 first block (in YOLO26 the stride-2 conv before a
stage is a separate choice, ``downsample``). Both use ReLU; we default to SiLU, the activation of
YOLO26 and of Ultralytics' ``RepConv``, and take any activation (``tests/blocks/test_repblock.py``
checks the ReLU form against the official code).

The same stack is the stem of a RepVGG-branch detection head (``head_stem: repconv``): see
:mod:`trainers.model.head_stem`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from blocks._fuse import Reparameterizable, check_fusable, check_positive, fuse_children
from blocks.repvgg import RepConv

__all__ = ["RepBlock"]


class RepBlock(Reparameterizable):
    """``n`` stacked 3x3 ``RepConv`` blocks: ``c1 -> c2`` then ``c2 -> c2`` (a RepVGG / YOLOv6 stage).

    Shapes: ``(B, c1, H, W) -> (B, c2, H, W)``. Inference form (after :meth:`reparameterize`):
    ``n`` 3x3 convs with bias, each followed by the activation.

    Args:
        c1: input channels.
        c2: output channels.
        n: number of ``RepConv`` blocks (>= 1).
        act: activation of every block: ``True`` for SiLU, ``False``/``None`` for none, or an
            ``nn.Module`` (each block gets its own copy).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, act: bool | nn.Module = True):
        super().__init__()
        check_positive(c1, "c1")
        check_positive(c2, "c2")
        check_positive(n, "n")
        self.c1, self.c2 = c1, c2
        self.m = nn.Sequential(*(RepConv(c1 if i == 0 else c2, c2, 3, 1, act=_own(act)) for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in order."""
        return self.m(x)

    def reparameterize(self) -> bool:
        """Fuse every block into one 3x3 conv with bias; ``False`` if already fused."""
        if self.is_fused():
            return False
        check_fusable(self)
        return fuse_children(self) > 0

    def extra_repr(self) -> str:
        return f"c1={self.c1}, c2={self.c2}, n={len(self.m)}"


def _own(act: bool | nn.Module) -> bool | nn.Module:
    """A module activation copied (each block owns its own), anything else as given."""
    return copy.deepcopy(act) if isinstance(act, nn.Module) else act
