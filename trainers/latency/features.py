"""What a latency predictor sees: the operators of the deployed (fused) graph, counted as they run.

After re-parameterization different blocks become the same convolutions, so the features are the
fused graph's aten operators, not the search choices (``PITFALLS.md``, "Latency prediction"). One
forward of the fused copy at the setting's image size runs under a ``TorchDispatchMode`` that sees
every aten call with its real shapes, functional ones included (our blocks compute kernels with
``F.conv2d``; module hooks would miss them). The forward runs on the ``meta`` device (shapes only,
no arithmetic: about 0.2 s per architecture at 640 px against 1-3 s computed; the same features,
a test compares them), or computed on the CPU when an operator has no meta kernel (the NMS head's
``nonzero``). Each operator adds to a few named features:

- convolutions by kind (``dw``: depthwise, ``pw``: 1x1, ``dense``: the rest) and kernel size:
  multiply-accumulates (millions), calls, and activation traffic (input + output elements, millions);
- elementwise ops (activations, add, mul, ...), concatenations, pooling and means, resampling,
  matrix products: elements produced (millions) and calls.

:attr:`GraphFeatures.ops` keeps the aten operator names seen, so a predictor can refuse an
architecture that runs an operator its fit never saw. The counts are also kept per top-level layer
(:func:`layer_features`): a layer's part depends only on that layer's configuration, so
:mod:`trainers.latency.feature_cache` adds cached parts instead of tracing every architecture.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["GraphFeatures", "count_operators", "graph_features", "layer_features", "merge", "op_family"]

ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "sigmoid", "silu", "relu", "hardswish", "hardsigmoid",
                         "gelu", "clamp", "neg", "exp", "sqrt", "rsqrt", "pow", "tanh", "where", "maximum",
                         "minimum", "leaky_relu", "softplus", "mish", "abs"})
POOLING = frozenset({"mean", "sum", "avg_pool2d", "_adaptive_avg_pool2d", "max_pool2d", "max_pool2d_with_indices",
                     "amax", "max"})
RESAMPLE = frozenset({"upsample_nearest2d", "upsample_bilinear2d", "_unsafe_index", "index"})
MATMUL = frozenset({"mm", "bmm", "matmul", "addmm", "baddbmm", "_softmax", "softmax"})
CONCAT = frozenset({"cat", "stack"})
FREE = frozenset({"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze",
                  "squeeze", "split", "split_with_sizes", "chunk", "slice", "select", "clone", "detach",
                  "alias", "empty", "zeros", "ones", "arange", "full", "lift_fresh", "_to_copy", "copy_",
                  "unbind", "contiguous", "sym_size", "sym_stride", "flatten", "new_empty", "fill_", "zeros_like",
                  "empty_like", "split_with_sizes_copy", "topk", "sort", "gather", "lt", "gt", "ge", "le", "eq",
                  "ne", "scalar_tensor", "linspace", "meshgrid", "repeat", "_local_scalar_dense", "item", "new_full",
                  "remainder", "floor_divide"})


def op_family(name: str) -> str | None:
    """The feature family of an aten operator (``convolution``, ``elementwise``, ...); ``None`` for unknown ones
    and ``free`` for views, allocations and index bookkeeping (counted as seen, costed as nothing)."""
    base = name.split(".")[0].rstrip("_") if not name.startswith("_") else name.split(".")[0]
    for family, names in (("elementwise", ELEMENTWISE), ("pool", POOLING), ("resample", RESAMPLE),
                          ("matmul", MATMUL), ("concat", CONCAT), ("free", FREE)):
        if base in names or base.rstrip("_") in names:
            return family
    return "convolution" if base in ("convolution", "conv2d", "_convolution") else None


@dataclass(frozen=True)
class GraphFeatures:
    """The named features of one fused graph and the aten operators it ran (``unknown``: no family)."""

    values: tuple[tuple[str, float], ...]
    ops: frozenset[str]
    unknown: frozenset[str]

    def as_dict(self) -> dict[str, float]:
        """Feature name -> value."""
        return dict(self.values)


def _numel(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel()
    return sum(_numel(y) for y in x) if isinstance(x, (list, tuple)) else 0


def _conv_features(args: tuple[Any, ...], out: torch.Tensor, add: Any) -> None:
    x, w, groups = args[0], args[1], int(args[8]) if len(args) > 8 else 1
    k = int(w.shape[-1])
    kind = "dw" if groups > 1 and groups == x.shape[1] else "pw" if k == 1 else "dense"
    tag = f"conv_{kind}_k{k}"
    add(f"{tag}_macs", out.numel() * (w.shape[1]) * k * k / 1e6)
    add(f"{tag}_calls", 1.0)
    add("conv_traffic", (x.numel() + out.numel()) / 1e6)


class _Tally:
    """Features, operators seen and operators without a family, of one part of a forward."""

    def __init__(self) -> None:
        self.features: dict[str, float] = defaultdict(float)
        self.ops: set[str] = set()
        self.unknown: set[str] = set()

    def graph(self) -> GraphFeatures:
        return GraphFeatures(tuple(sorted(self.features.items())), frozenset(self.ops), frozenset(self.unknown))


class _OpCounter(TorchDispatchMode):
    """Counts every aten call of a forward into named features, per part (:attr:`part`: a layer index, or ``-1``
    outside every layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.tallies: dict[int, _Tally] = defaultdict(_Tally)
        self.part = -1

    def add(self, name: str, value: float) -> None:
        self.tallies[self.part].features[name] += value

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        tally = self.tallies[self.part]
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            tally.ops.add(name)  # a scalar read from a shape-only tensor (the head's anchor strides): no op counted
            return 1
        out = func(*args, **(kwargs or {}))
        tally.ops.add(name)
        family = op_family(name)
        if family == "convolution":
            _conv_features(args, out, self.add)
        elif family is None:
            tally.unknown.add(name)
        elif family != "free":
            self.add(f"{family}_elems", _numel(out) / 1e6)
            self.add(f"{family}_calls", 1.0)
        return out


def merge(parts: Any) -> GraphFeatures:
    """The features of a graph made of ``parts`` (an iterable of :class:`GraphFeatures`): values summed, operators
    united."""
    total: dict[str, float] = defaultdict(float)
    ops: set[str] = set()
    unknown: set[str] = set()
    for part in parts:
        for k, v in part.values:
            total[k] += v
        ops |= part.ops
        unknown |= part.unknown
    return GraphFeatures(tuple(sorted(total.items())), frozenset(ops), frozenset(unknown))


def graph_features(model: Any, imgsz: int, head: str) -> GraphFeatures:
    """The operator features of ``model``'s deployed form (fused copy, ``head`` pinned) at ``imgsz`` px, batch 1."""
    return merge(layer_features(model, imgsz, head))


def layer_features(model: Any, imgsz: int, head: str) -> list[GraphFeatures]:
    """The operator features of each top-level layer of ``model``'s deployed form (``model.model[i]``), the
    operators outside every layer (the head's post-processing) counted with the last one."""
    from trainers.latency.backends import deployed_copy
    from trainers.model.heads import DeployedDetector

    deployed = deployed_copy(model, head)
    detect: Any = deployed.model[-1] if hasattr(deployed, "model") else None
    if hasattr(detect, "shape"):  # a model that ran before keeps its anchors: count them as a fresh one computes them
        detect.shape = None
    try:
        return count_operators(DeployedDetector(copy.deepcopy(deployed).to("meta"), head), imgsz, "meta")
    except (RuntimeError, NotImplementedError):  # an operator without a shape-only kernel: run it for real
        return count_operators(DeployedDetector(deployed, head), imgsz, "cpu")


def count_operators(detector: Any, imgsz: int, device: str) -> list[GraphFeatures]:
    """The features of one batch-1 forward of ``detector`` (on ``device``: ``meta`` or where its weights are), per
    top-level layer of its model (what runs outside every layer is counted with the last; a model without an
    Ultralytics layer list is one part)."""
    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    counter = _OpCounter()
    layers = list(getattr(detector.model, "model", None) or [detector.model])
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(lambda *_, i=i: setattr(counter, "part", i)))
        hooks.append(layer.register_forward_hook(lambda *_: setattr(counter, "part", -1)))
    try:
        with torch.no_grad(), counter:
            detector(x)
    finally:
        for h in hooks:
            h.remove()
    parts = [counter.tallies[i].graph() for i in range(len(layers))]  # a layer that ran no operator: empty
    parts[-1] = merge([parts[-1], counter.tallies[-1].graph()])
    return parts
