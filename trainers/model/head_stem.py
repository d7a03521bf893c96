"""The stem of a RepVGG-branch Detect head (``head_stem: repconv``): a ``RepBlock`` that Ultralytics can probe.

Each per-scale branch of the head becomes ``Sequential(HeadStem(c_in, c_mid, layers), prediction conv)``
(:func:`trainers.model.yolo26.build_head_branch`). ``HeadStem`` is :class:`blocks.repblock.RepBlock`
plus the one attribute Ultralytics reads from a branch's first layer: ``DetectionModel.load`` (which
continuing training from a checkpoint runs) compares two heads' input widths through
``head.cv2[i][0].conv.in_channels``, written for the stock ``Conv`` there. Kept here, beside the
builder that knows Ultralytics' layer attributes, so ``blocks`` stays free of Ultralytics.
"""

from __future__ import annotations

from torch import nn

from blocks.repblock import RepBlock
from blocks.repvgg import RepConv

__all__ = ["HeadStem"]


class HeadStem(RepBlock):
    """A :class:`~blocks.repblock.RepBlock` used as a Detect head branch's stem; ``conv`` is its first 3x3 conv."""

    @property
    def conv(self) -> nn.Conv2d:
        """The first block's 3x3 conv (its kxk branch, or its fused conv once fused): what ``branch[0].conv`` reads."""
        first = self.m[0]
        assert isinstance(first, RepConv)
        if first.fused is not None:
            return first.fused
        assert first.conv_kxk is not None
        return first.conv_kxk.conv
