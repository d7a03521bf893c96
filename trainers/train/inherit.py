"""Weight inheritance: start a candidate from a trained checkpoint wherever the layers match.

Every tensor of the candidate whose name (layer path) and shape equal a tensor of the source
checkpoint is copied: the stem, the stages left stock, downsample convs of the same type, the
neck and the head, at the same widths. Nothing else is guessed: a rep block that replaces a
C3k2 (RepViT, OREPA, C3k2_RVB_SE), a stage of another width or depth, and every layer after a
width change whose shapes differ start from the usual fresh initialisation. (Mapping a stock
conv into a RepConv's kxk branch would also be exact, but a rep stage replaces a whole C3k2
whose inner convs have other shapes, so it would rarely apply; it is not done.)

The inherited share is counted over parameters (not BatchNorm running statistics, which are
copied with their layer): elements copied / elements of the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Inherited:
    """What a candidate took from its source: tensors and parameter elements copied, and their share."""

    tensors: int
    params_copied: int
    params_total: int

    @property
    def share(self) -> float:
        """Copied parameter elements over the candidate's parameter elements (0 to 1)."""
        return self.params_copied / self.params_total if self.params_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (share rounded to 4 digits)."""
        return {"tensors": self.tensors, "params_copied": self.params_copied, "params_total": self.params_total,
                "share": round(self.share, 4)}


def matching_tensors(model: nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Names of ``model``'s state tensors that ``source`` holds with the same shape."""
    return [k for k, v in model.state_dict().items() if k in source and tuple(source[k].shape) == tuple(v.shape)]


def inherit_weights(model: nn.Module, source: dict[str, torch.Tensor]) -> Inherited:
    """Copy into ``model`` (in place) every tensor of ``source`` that matches by name and shape."""
    names = matching_tensors(model, source)
    state = model.state_dict()
    with torch.no_grad():
        for k in names:
            state[k].copy_(source[k].to(dtype=state[k].dtype, device=state[k].device))
    params = dict(model.named_parameters())
    copied = sum(params[k].numel() for k in names if k in params)
    return Inherited(len(names), copied, sum(p.numel() for p in params.values()))


def source_state(path: str) -> dict[str, torch.Tensor]:
    """The float32 state dict of the (student) model in an Ultralytics checkpoint; ``ValueError`` on a bad file."""
    from pathlib import Path

    from trainers.train.teacher import load_detection_checkpoint

    return state_of(load_detection_checkpoint(Path(path), "--init-from"))


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The float32 state dict of a loaded source model."""
    return {k: v.float() for k, v in model.state_dict().items()}
