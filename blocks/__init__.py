"""Re-parameterizable blocks for YOLO26 search: RepVGG / RepConv, RepViT, OREPA and SE.

Every block with a training form and a fused inference form subclasses
:class:`Reparameterizable` and implements ``reparameterize()``; one walker,
:func:`reparameterize_model`, fuses a whole model.
"""

from __future__ import annotations

from blocks._fuse import ConvBN, Reparameterizable, reparameterize_model
from blocks.orepa import OREPAConv
from blocks.repvgg import MultiScaleRepVGGDW, RepConv, RepVGGDW
from blocks.repvit import C3k2_RVB_SE, RepViTBlock
from blocks.se import DynamicSE, EfficientSE

__all__ = [
    "C3k2_RVB_SE",
    "ConvBN",
    "DynamicSE",
    "EfficientSE",
    "MultiScaleRepVGGDW",
    "OREPAConv",
    "RepConv",
    "RepVGGDW",
    "RepViTBlock",
    "Reparameterizable",
    "reparameterize_model",
]
