"""Re-parameterizable blocks for YOLO26 search: RepVGG / RepConv / RepBlock, RepViT, OREPA and SE.

Every block with a training form and a fused inference form subclasses
:class:`Reparameterizable` and implements ``reparameterize()``; one walker,
:func:`reparameterize_model`, fuses a whole model.

Names are resolved lazily (PEP 562), so ``import blocks.registry`` (what a search-space
check needs) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ConvBN": "blocks._fuse",
    "Reparameterizable": "blocks._fuse",
    "reparameterize_model": "blocks._fuse",
    "RepConv": "blocks.repvgg",
    "RepVGGDW": "blocks.repvgg",
    "MultiScaleRepVGGDW": "blocks.repvgg",
    "EfficientSE": "blocks.se",
    "DynamicSE": "blocks.se",
    "SEWidthTracker": "blocks.se",
    "SEFactory": "blocks.se",
    "RepViTBlock": "blocks.repvit",
    "C3k2_RVB_SE": "blocks.repvit",
    "OREPAConv": "blocks.orepa",
    "QARepConv": "blocks.qarepvgg",
    "RepBlock": "blocks.repblock",
    "RepViTNet": "blocks.repvit_backbone",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the public block ``name`` from its family module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return __all__
