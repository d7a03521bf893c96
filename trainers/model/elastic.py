"""Elastic width and depth (OFA/BigNAS): a path narrower or shallower than the supernet runs on leading slices.

A supernet is built at the largest width and depth of each stage (:class:`~trainers.model.supernet_spec.SupernetSpec`).
A path at another shape is ``build_model(arch)``'s structure (its *skeleton*) run on tensors taken from the
supernet: each tensor of the skeleton is the leading slice (``t[:n0, :n1, ...]``) of the tensor at the same key
of the path at the built shape (``spec.built(arch)``). So a stage at depth ``d`` uses the first ``d`` blocks of
the built stage, a conv at fewer channels the first output and input channels of the built conv, a
BatchNorm the first entries of its weights and running statistics. The slices are views: a training step
on the skeleton (:func:`torch.func.functional_call`) sends its gradients and BatchNorm statistics into the
supernet's tensors, and :func:`trainers.model.extract.extract` copies the same slices into a stand-alone
model, so what is trained is what is extracted, by construction.

The slicing rule is generic (nothing per block type); it only needs every skeleton tensor's key to exist in
the built path with every dimension at least as large, which :func:`sliced_state` checks. Skeletons are
kept in a small cache (a build costs 0.1-0.2 s on a CPU core; SPOS training builds the next step's in a
thread while the current step trains: :func:`trainers.train.supernet_trainer.spos_callbacks`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from trainers.model.architecture import Architecture

__all__ = ["HEAD_ATTRS", "copy_head_attrs", "leading_slice", "run_on", "skeleton", "sliced_state"]

SKELETONS = 8
"""Skeletons kept (least recently used dropped): SPOS draws a path per step, the EMA copy and the
parameter count of the constraint check reuse it."""

_cache: OrderedDict[tuple[str, int, str, str], nn.Module] = OrderedDict()
_lock = threading.Lock()  # SPOS builds the next step's skeleton in a thread while this step trains


def leading_slice(tensor: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """The view of ``tensor``'s first ``shape[i]`` entries along each dimension i; ``ValueError`` if it is smaller."""
    if tensor.dim() != len(shape) or any(n > m for n, m in zip(shape, tensor.shape)):
        raise ValueError(f"a {tuple(shape)} tensor is not a leading slice of a {tuple(tensor.shape)} one")
    return tensor[tuple(slice(0, n) for n in shape)]


def sliced_state(built: Mapping[str, Tensor], like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """For every key of ``like``, the leading slice of ``built[key]`` with ``like[key]``'s shape (views, not copies).

    ``ValueError`` naming the key when ``built`` lacks it or is smaller along some dimension.
    """
    out: dict[str, Tensor] = {}
    for key, target in like.items():
        if key not in built:
            raise ValueError(f"{key}: not in the supernet's path at its built shape")
        try:
            out[key] = leading_slice(built[key], target.shape)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    return out


HEAD_ATTRS = ("end2end", "max_det", "agnostic_nms", "xyxy", "export", "format", "dynamic")
"""The Detect head's settings a caller may set on the supernet (Ultralytics' ``set_head_attr``, export flags)."""


def copy_head_attrs(source: Any, target: Any) -> None:
    """Give the Detect head ``target`` the :data:`HEAD_ATTRS` that the Detect head ``source`` has."""
    for attr in HEAD_ATTRS:
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))


def skeleton(arch: Architecture, nc: int, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """``build_model(arch, nc)`` on ``device`` in ``dtype``, as a structure to run supernet tensors on (cached per
    path, device and type; do not train its own tensors). Built and converted outside inference mode, so a
    skeleton first used in validation can be trained later."""
    from trainers.model.build import build_model

    key = (arch.hash, nc, str(device), str(dtype))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    with torch.inference_mode(False), torch.no_grad():
        model = build_model(arch, nc=nc).to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    with _lock:
        _cache[key] = model
        while len(_cache) > SKELETONS:
            _cache.popitem(last=False)
    return model


def run_on(arch: Architecture, nc: int, state: Mapping[str, Tensor], x: Any, head: Any, training: bool, *args: Any,
           **kwargs: Any) -> Any:
    """``model(x, *args, **kwargs)`` for ``arch``'s skeleton with ``state``'s tensors in place of its own, in
    ``training`` mode, with the Detect head settings of ``head``. The skeleton is on ``x``'s device in ``state``'s
    float type: the buffers it keeps (made from its shape, not in ``state``) must match them, e.g. in half precision.
    """
    from torch.func import functional_call

    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    model = skeleton(arch, nc, x.device if isinstance(x, Tensor) else "cpu", dtype)
    model.train(training)
    copy_head_attrs(head, model.model[-1])  # type: ignore[index]
    return functional_call(model, dict(state), (x, *args), kwargs, tie_weights=False, strict=False)
