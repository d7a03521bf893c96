"""YOLO26 as Ultralytics lays it out, and how a stage choice becomes the module at that layer.

The one module that knows YOLO26's layer indices (:data:`STAGE_LAYERS`) and the attributes of
Ultralytics modules that our builders read (``cv1``, ``cv2``, ``m``, ``c``) or must copy for
Ultralytics' ``forward`` (``i``, ``f``, ``type``, ``np``). Each stage builder takes the stock
module at a stage (a ``C3k2``) and a :class:`~trainers.architecture.StageChoice`, and returns the
module that replaces it with the same input and output channels. Nothing in Ultralytics is
edited. An Ultralytics release that renames a layer can break only this file.

Importing this module does not import torch (the stage table is read by space validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from trainers.architecture import StageChoice

# Stage name -> (layer index of the C3k2 in stock yolo26.yaml, index of the stride-2 Conv before it or None).
STAGE_LAYERS: dict[str, tuple[int, int | None]] = {
    "p2_backbone": (2, 1),
    "p3_backbone": (4, 3),
    "p4_backbone": (6, 5),
    "p5_backbone": (8, 7),
    "p4_neck": (13, None),
    "p3_out": (16, None),
    "p4_out": (19, 17),
    "p5_out": (22, 20),
}


def se_factory(choice: StageChoice) -> Any:
    """The :class:`blocks.se.SEFactory` of a stage choice, or ``None`` when SE is off."""
    from blocks.se import SEFactory

    if choice.se == "none":
        return None
    return SEFactory(choice.se_kind, choice.se_reduction, choice.se_min_ratio, choice.se_max_ratio)


def stock_channels(stock: Any) -> tuple[int, int, int]:
    """``(c1, c2, n)`` of an Ultralytics C2f-family module (``C3k2``)."""
    return stock.cv1.conv.in_channels, stock.cv2.conv.out_channels, len(stock.m)


def build_c3k2_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The stock C3k2, unchanged (the baseline)."""
    return stock


def build_repvit_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """RepViT blocks in place of the C3k2, same depth; SE in every other block (as in the paper)."""
    from torch import nn

    from blocks.repvit import RepViTBlock

    c1, c2, n = stock_channels(stock)
    factory = se_factory(choice)
    return nn.Sequential(*(
        RepViTBlock(c1 if i == 0 else c2, c2, s=1, se=factory is not None and i % 2 == 0,
                    kernels=tuple(choice.kernels), se_module=factory)
        for i in range(n)
    ))


def build_c3k2_rvb_se_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """C3k2_RVB_SE with the stock stage's channels, depth and hidden ratio."""
    from blocks.repvit import C3k2_RVB_SE

    c1, c2, n = stock_channels(stock)
    e = (stock.c + 0.5) / c2  # int(c2 * e) == stock.c exactly, whatever float rounding does
    return C3k2_RVB_SE(c1, c2, n=n, se=choice.se, se_reduction=choice.se_reduction, kernels=tuple(choice.kernels),
                       e=e, se_module=se_factory(choice))


def _orepa_like(conv: Any) -> nn.Module:
    from blocks.orepa import OREPAConv

    c = conv.conv
    return OREPAConv(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0], g=c.groups)


def build_orepa_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The stock C3k2 whose bottleneck convs (every ``Bottleneck.cv1/cv2`` inside) are OREPAConv."""
    for module in list(stock.m.modules()):
        if type(module).__name__ == "Bottleneck":
            module.cv1 = _orepa_like(module.cv1)
            module.cv2 = _orepa_like(module.cv2)
    return stock


STAGE_BUILDERS: dict[str, Callable[[Any, StageChoice], nn.Module]] = {
    "C3k2": build_c3k2_stage,
    "RepViT": build_repvit_stage,
    "C3k2_RVB_SE": build_c3k2_rvb_se_stage,
    "OREPA": build_orepa_stage,
}
"""Block name (every name of :data:`blocks.registry.STAGE_BLOCKS`) -> its stage builder."""


def build_stage(stock: Any, choice: StageChoice) -> nn.Module:
    """The module of ``choice``'s block in place of the stock C3k2 ``stock``."""
    return STAGE_BUILDERS[choice.block](stock, choice)


def build_downsample(stock: Any, name: str) -> nn.Module:
    """The stride-2 conv before a stage: the stock ``Conv``, a ``RepConv`` or an ``OREPA`` conv of its shape."""
    if name == "Conv":
        return stock
    from blocks.orepa import OREPAConv
    from blocks.repvgg import RepConv

    c = stock.conv
    cls = {"RepConv": RepConv, "OREPA": OREPAConv}[name]
    return cls(c.in_channels, c.out_channels, k=c.kernel_size[0], s=c.stride[0])


def adopt_layer_attrs(new: Any, old: Any) -> Any:
    """Give ``new`` the layer attributes Ultralytics' forward and logging read from ``old``."""
    if new is not old:
        new.i, new.f = old.i, old.f
        new.type = type(new).__module__ + "." + type(new).__name__
    new.np = sum(p.numel() for p in new.parameters())
    return new


def swap_stages(model: Any, stages: tuple[tuple[str, StageChoice], ...]) -> None:
    """Replace, in an Ultralytics YOLO26 ``DetectionModel``, each stage's C3k2 and stride-2 conv as chosen."""
    for name, choice in stages:
        idx, ds = STAGE_LAYERS[name]
        old = model.model[idx]
        model.model[idx] = adopt_layer_attrs(build_stage(old, choice), old)
        if ds is not None and choice.downsample not in (None, "Conv"):
            old_ds = model.model[ds]
            model.model[ds] = adopt_layer_attrs(build_downsample(old_ds, choice.downsample), old_ds)
