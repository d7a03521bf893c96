"""The inference form of a model: a fused deep copy, and what it costs (params, GFLOPs)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from blocks import reparameterize_model


def fused_copy(model: nn.Module, ultralytics_fuse: bool = True, ours: bool = True,
               before_fuse: Callable[[Any], Any] | None = None) -> Any:
    """A float32, eval-mode deep copy of ``model`` with its conv+BN and rep branches folded.

    ``ultralytics_fuse`` runs Ultralytics' ``model.fuse()`` (its Conv+BN, Detect's unused
    branch); ``ours`` runs :func:`blocks.reparameterize_model`. ``before_fuse`` is applied to the
    copy first (e.g. :func:`trainers.model.heads.pin_head`, since ``fuse()`` drops the head not
    selected). Folding happens in float32; cast afterwards.
    """
    fused: Any = copy.deepcopy(model).float().eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    if before_fuse is not None:
        before_fuse(fused)
    if ultralytics_fuse and not ours and hasattr(fused, "fuse_ultralytics_only"):
        fused = fused.fuse_ultralytics_only()  # a RepDetectionModel's fuse() would fold ours too
    elif ultralytics_fuse and hasattr(fused, "fuse"):
        fused = fused.fuse(verbose=False)
    if ours:
        reparameterize_model(fused)
    return fused


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs of one ``imgsz`` x ``imgsz`` image through the fused copy of ``model``, counted by thop.

    thop (``ultralytics-thop``, through Ultralytics' ``get_flops``) counts module hooks; the
    fused form holds only ``nn.Conv2d`` where our blocks compute kernels functionally.
    """
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(fused_copy(model), imgsz=imgsz))


def flop_counter_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs counted by ``torch.utils.flop_counter`` (aten ops) on the fused copy: a cross-check for thop."""
    from torch.utils.flop_counter import FlopCounterMode

    fused = fused_copy(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fused(torch.zeros(1, 3, imgsz, imgsz))
    return counter.get_total_flops() / 1e9
