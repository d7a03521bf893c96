"""How our blocks enter an Ultralytics YOLO26 model: the one module that knows Ultralytics' layer API.

Each builder takes the stock module at a stage (a ``C3k2`` or the stride-2 ``Conv`` before it)
and returns the module that replaces it, with the same input and output channels. Only
public attributes of Ultralytics modules are read (``cv1``, ``cv2``, ``m``, ``c``); nothing
in Ultralytics is edited. :func:`adopt_layer_attrs` copies the attributes Ultralytics'
``forward`` relies on (``i``, ``f``, ``type``, ``np``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

import blocks
from blocks.registry import stage_block


@dataclass(frozen=True)
class SEFactory:
    """Builds the SE module a stage asked for, for a given channel count (picklable).

    Ratios larger than the channel count are clamped to it (hidden width >= 1), so a
    reduction that fits wide stages does not break the narrowest ones.
    """

    kind: str = "fixed"
    reduction: int = 4
    min_ratio: int = 4
    max_ratio: int = 16

    def __call__(self, channels: int) -> nn.Module:
        if self.kind == "fixed":
            return blocks.EfficientSE(channels, reduction=min(self.reduction, channels))
        hi = min(self.max_ratio, channels)
        lo = min(self.min_ratio, hi - 1) if hi > 1 else 1
        if lo >= hi:
            return blocks.EfficientSE(channels, reduction=lo)
        return blocks.DynamicSE(channels, min_ratio=lo, max_ratio=hi)


def se_factory(choice: Any) -> SEFactory | None:
    """The SE factory of a stage choice, or ``None`` when SE is off."""
    if choice.se == "none":
        return None
    return SEFactory(choice.se_kind, choice.se_reduction, choice.se_min_ratio, choice.se_max_ratio)


def stock_channels(stock: Any) -> tuple[int, int, int]:
    """``(c1, c2, n)`` of an Ultralytics C2f-family module (``C3k2``)."""
    return stock.cv1.conv.in_channels, stock.cv2.conv.out_channels, len(stock.m)


def build_c3k2_stage(stock: Any, choice: Any) -> nn.Module:
    """The stock C3k2, unchanged (the baseline)."""
    return stock


def build_repvit_stage(stock: Any, choice: Any) -> nn.Module:
    """RepViT blocks in place of the C3k2, same depth; SE in every other block (as in the paper)."""
    c1, c2, n = stock_channels(stock)
    factory = se_factory(choice)
    layers = [
        blocks.RepViTBlock(c1 if i == 0 else c2, c2, s=1, se=factory is not None and i % 2 == 0,
                    kernels=tuple(choice.kernels), se_module=factory)
        for i in range(n)
    ]
    return nn.Sequential(*layers)


def build_c3k2_rvb_se_stage(stock: Any, choice: Any) -> nn.Module:
    """C3k2_RVB_SE with the stock stage's channels, depth and hidden ratio."""
    c1, c2, n = stock_channels(stock)
    e = (stock.c + 0.5) / c2  # int(c2 * e) == stock.c exactly, whatever float rounding does
    return blocks.C3k2_RVB_SE(c1, c2, n=n, se=choice.se, se_reduction=choice.se_reduction,
                              kernels=tuple(choice.kernels), e=e, se_module=se_factory(choice))


def _orepa_like(conv: Any) -> nn.Module:
    c = conv.conv
    return blocks.OREPAConv(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0], g=c.groups)


def build_orepa_stage(stock: Any, choice: Any) -> nn.Module:
    """The stock C3k2 whose bottleneck convs (every ``Bottleneck.cv1/cv2`` inside) are OREPAConv."""
    for module in list(stock.m.modules()):
        if type(module).__name__ == "Bottleneck":
            module.cv1 = _orepa_like(module.cv1)
            module.cv2 = _orepa_like(module.cv2)
    return stock


def build_downsample(stock: Any, name: str) -> nn.Module:
    """The stride-2 conv before a stage: stock ``Conv``, ``RepConv`` or ``OREPA``."""
    if name == "Conv":
        return stock
    c = stock.conv
    cls = {"RepConv": blocks.RepConv, "OREPA": blocks.OREPAConv}[name]
    return cls(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0])


def build_stage(stock: Any, choice: Any) -> nn.Module:
    """Resolve the stage's block through the registry and build its module."""
    module_name, func = stage_block(choice.block).builder.split(":")
    return getattr(importlib.import_module(module_name), func)(stock, choice)


def adopt_layer_attrs(new: Any, old: Any) -> Any:
    """Give ``new`` the layer attributes Ultralytics' forward and logging read from ``old``."""
    if new is old:
        old.np = sum(p.numel() for p in old.parameters())
        return old
    new.i, new.f = old.i, old.f
    new.type = type(new).__module__ + "." + type(new).__name__
    new.np = sum(p.numel() for p in new.parameters())
    return new
