"""What a training step keeps in memory: the tensors autograd saves for backward."""

from __future__ import annotations

import torch
from torch import nn


def saved_tensor_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for backward in one forward of ``module(x)``.

    Parameters are left out (they are in memory anyway); the input ``x`` is counted when it
    requires grad. The module runs in whatever mode it is in (call ``train()`` first for a training step).
    """
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())
