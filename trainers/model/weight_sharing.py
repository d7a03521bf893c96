"""Weight sharing inside a supernet stage: the candidates of one block family share the layers they have in common.

Without it every candidate of a stage (for ``spaces/yolo26.yaml``: 53 per stage, 33 of them
C3k2_RVB_SE variants that differ only in SE options and kernel set) has its own weights and, under
SPOS, trains on about 1/53 of the steps: after a 12-epoch supernet each had seen a few dozen
updates, and every subnet scored near 0 mAP. SPOS, FairNAS and OFA share the operators that the
choices have in common; here the rule is structural, so no block code needs to know about it:

Within one block family, two candidates share a layer (the same ``nn.Module`` object, so the same
parameters, gradients and BatchNorm statistics) when it sits at the same place in both, has the
same type, the same tensor shapes and the same plain attributes (stride, groups, SE
ratio bounds...). "Same place" is the module's qualified name with the
multi-scale mixer's ``branches.<i>`` dropped (its branch of kernel k is the single-kernel mixer of
kernel k), and the n-th such layer of a candidate only ties to the n-th of the others, so two layers
of one candidate are never tied together. An SE module of reduction 4 and one of reduction 8 differ
in shape and stay apart; the C3k2_RVB_SE trunk (split conv, RepViT blocks, merge conv) is one set
of weights for all its SE and kernel options. Families never share with each other.

Shared modules are what ``named_modules()`` and ``parameters()`` deduplicate (the optimizer sees
each tensor once); ``state_dict()`` lists a shared tensor under every candidate's key, which is why
:class:`SharedWeightsEMA` averages each tensor once per step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["SharedWeightsEMA", "distinct_float_tensors", "share_within_families", "sharing_key"]

_BRANCH = re.compile(r"(^|\.)branches\.\d+(?=\.|$)")


def _own_tensors(module: nn.Module) -> list[Tensor]:
    """The module's own parameters and buffers (not its children's)."""
    return [*module.parameters(recurse=False), *module.buffers(recurse=False)]


def _settings(module: nn.Module) -> str:
    """The module's plain attributes (stride, padding, groups, eps, SE ratio bounds, ...), as text."""
    return repr(sorted((k, repr(v)) for k, v in vars(module).items() if not k.startswith("_") and k != "training"))


def sharing_key(family: str, name: str, module: nn.Module) -> tuple[Any, ...]:
    """What must match for two candidates' layers to be one: family, place (branch index dropped), type,
    tensor shapes and plain attributes (a layer configured otherwise computes something else)."""
    place = _BRANCH.sub(r"\1", name).replace("..", ".").strip(".")
    shapes = tuple(tuple(t.shape) for t in _own_tensors(module))
    return family, place, type(module).__qualname__, shapes, _settings(module)


def share_within_families(candidates: Mapping[str, nn.Module], families: Sequence[str]) -> int:
    """Tie the layers the candidates of each family have in common (see the module docstring); the count tied.

    ``families[i]`` is the block family of the i-th candidate. The first candidate holding a layer
    keeps it; later ones get that module in place of their own. Candidates are changed in place.
    """
    if len(families) != len(candidates):
        raise ValueError(f"one family per candidate: {len(candidates)} candidates, {len(families)} families")
    owners: dict[tuple[Any, ...], nn.Module] = {}
    tied = 0
    for candidate, family in zip(candidates.values(), families):
        seen: Counter[tuple[Any, ...]] = Counter()
        for name, module in list(candidate.named_modules()):
            if not name or not _own_tensors(module):
                continue
            base = sharing_key(family, name, module)
            key = (*base, seen[base])
            seen[base] += 1
            owner = owners.setdefault(key, module)
            if owner is not module:
                candidate.set_submodule(name, owner)
                tied += 1
    return tied


def distinct_float_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """``(state_dict key, tensor)`` of each floating-point tensor of ``module``'s state, every shared tensor once."""
    seen: set[int] = set()
    out = []
    for key, value in module.state_dict(keep_vars=True).items():
        if value.dtype.is_floating_point and id(value) not in seen:
            seen.add(id(value))
            out.append((key, value))
    return out


def _ema_base() -> type:
    from ultralytics.utils.torch_utils import ModelEMA

    return ModelEMA


class SharedWeightsEMA(_ema_base()):  # type: ignore[misc]
    """Ultralytics' ``ModelEMA`` for a model with shared layers: each tensor is averaged once per step.

    ``ModelEMA.update`` walks ``state_dict()``, where a tensor shared by n candidates appears n
    times: it would be averaged n times per step (and a fused in-place update over a list holding
    one tensor twice is not defined). This one walks :func:`distinct_float_tensors` instead; the
    decay ramp, ``updates`` and ``enabled`` are the base class's.
    """

    @classmethod
    def adopt(cls, ema: Any) -> SharedWeightsEMA:
        """The same EMA state (copy, update count, decay) as ``ema``, with this class's update."""
        new = cls.__new__(cls)
        new.__dict__.update(vars(ema))
        return new

    def update(self, model: nn.Module) -> None:
        """Move each distinct floating-point tensor of the EMA copy towards ``model``'s (Ultralytics' decay ramp)."""
        if not self.enabled:
            return
        from ultralytics.utils.torch_utils import unwrap_model

        self.updates += 1
        weight = 1 - self.decay(self.updates)
        pairs = getattr(self, "_shared_pairs", None)
        if pairs is None:  # tensors are updated in place: the pairs are built once
            current = unwrap_model(model).state_dict()
            pairs = self._shared_pairs = [(v, current[k]) for k, v in distinct_float_tensors(self.ema)]
        for ema_value, value in pairs:
            ema_value.data.lerp_(value.detach(), weight)
