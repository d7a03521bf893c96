"""Operator features of an architecture without building it: per-layer parts, cached by what determines them.

Tracing a fused model costs about half a second (build, fuse, shape-only forward), which would make
a predictor as slow as a short measurement. But a fused graph's features are a sum over its top-level
layers (:func:`trainers.latency.features.layer_features`), and the part of layer ``i`` depends only
on that layer: its entry in the resized model dict (module, repeats, arguments), its input channels,
the choice that builds it (a stage's :class:`~trainers.model.architecture.StageChoice`, a downsample
conv's name, the head stem, a RepViT backbone), the class count and the deployment image size and
head. :func:`layer_keys` computes those keys from the architecture alone (a dict copy and channel
arithmetic, no torch module); :class:`LayerFeatureCache` traces an architecture only when one of its
layers is new and otherwise adds cached parts. A search space has millions of architectures but a
few hundred distinct layers, so after warming up almost every prediction is a sum of cached parts.
``tests/trainers/test_latency_feature_cache.py`` checks that the sum equals a full trace, architecture
by architecture, across the shipped spaces.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, NamedTuple

from trainers.latency.features import GraphFeatures, layer_features, merge
from trainers.model.architecture import DEFAULT_BACKBONE, Architecture, stages_of_backbone
from trainers.model.layout import CHANNEL_MODULES, STAGE_LAYERS

__all__ = ["LayerFeatureCache", "layer_channels", "layer_keys", "model_dict", "shared_cache"]


@functools.lru_cache(maxsize=16)
def _base_dict(yaml_name: str) -> Any:
    from ultralytics.nn.tasks import yaml_model_load

    return yaml_model_load(yaml_name)


@functools.lru_cache(maxsize=16)
def _repvit_net(backbone: str, yaml_name: str) -> Any:
    """The RepViT backbone module of ``backbone`` at the scale of ``yaml_name`` (built once per pair)."""
    from trainers.model.yolo26 import repvit_net

    return repvit_net(backbone, _base_dict(yaml_name))


class _Shape(NamedTuple):
    """A stage's width and depth: all that :func:`trainers.model.yolo26.resized_model_dict` reads of its choice."""

    width: float
    depth: int | None


def model_dict(arch: Architecture) -> dict[str, Any]:
    """The Ultralytics model dict :func:`trainers.model.build.build_model` parses for ``arch`` (not to be mutated)."""
    return _model_dict(arch.base, arch.scale, arch.backbone, _shapes(arch))


def _shapes(arch: Architecture) -> tuple[tuple[str, _Shape], ...]:
    return tuple((n, _Shape(c.width, c.depth)) for n, c in arch.stages)


def _model_dict(base: str, scale: str, backbone: str, shapes: tuple[tuple[str, _Shape], ...]) -> dict[str, Any]:
    from trainers.model.yolo26 import architecture_model_dict

    yaml_name = f"{base.rsplit('.', 1)[0]}{scale}.yaml"
    return architecture_model_dict(_base_dict(yaml_name), shapes, _repvit_net(backbone, yaml_name))


def layer_channels(cfg: dict[str, Any]) -> list[tuple[tuple[int, ...], int]]:
    """``(input channels, output channels)`` of every layer of a YOLO26 model dict, as Ultralytics' ``parse_model``
    sizes them (the Detect head's output is given as 0)."""
    from ultralytics.utils.ops import make_divisible

    _, width, max_channels = cfg["scales"][cfg["scale"]]
    ch: list[int] = []
    out: list[tuple[tuple[int, ...], int]] = []
    for f, _, module, args in cfg["backbone"] + cfg["head"]:
        ins = tuple((ch[x] if ch else 3) for x in (f if isinstance(f, list) else [f]))
        if module in CHANNEL_MODULES:
            c2 = make_divisible(min(args[0], max_channels) * width, 8)
        elif module == "Concat":
            c2 = sum(ins)
        elif module == "Detect":
            c2 = 0
        else:  # nn.Upsample
            c2 = ins[0]
        ch.append(c2)
        out.append((ins, c2))
    return out


def layer_keys(arch: Architecture, nc: int) -> list[str]:
    """One key per top-level layer of ``arch``'s model: everything the layer's fused operators depend on besides
    the deployment image size and head (module, repeats and arguments, input and output channels, the base
    config and its scale's depth, width and channel limit, the dict's model-level fields, the choice that builds
    it, ``nc`` for the head), as text (a stage's choice by its ``repr``: a frozen dataclass of all its fields)."""
    layers = _layout(arch.base, arch.scale, arch.backbone, _shapes(arch))
    built = stages_of_backbone(arch.backbone)
    owner: dict[int, Any] = {}
    for name, choice in arch.stages:
        if name in built:
            idx, ds = STAGE_LAYERS[name]
            owner[idx] = replace(choice, downsample=None)  # the stage's layer does not hold the downsample conv
            if ds is not None:
                owner[ds] = ("downsample", choice.downsample or "Conv")
    if arch.backbone != DEFAULT_BACKBONE:
        owner.update({i: ("backbone", arch.backbone) for i in range(9)})
    owner[len(layers) - 1] = ("head", arch.head_stem, arch.head_stem_layers, nc)
    return [repr((i, layer, owner.get(i))) for i, layer in enumerate(layers)]


@functools.lru_cache(maxsize=4096)
def _layout(base: str, scale: str, backbone: str, shapes: tuple[tuple[str, _Shape], ...]) -> tuple[str, ...]:
    """Per layer of the model dict: its repeats, module and arguments, its channels and what the whole dict sets
    (base, scale multiples, model-level fields), as text; cached by the stages' widths and depths."""
    cfg = _model_dict(base, scale, backbone, shapes)
    model_level = {k: v for k, v in cfg.items() if k not in ("backbone", "head", "scales")}  # scale, reg_max, ...
    common = (base, cfg["scales"][cfg["scale"]], sorted(model_level.items(), key=str))
    return tuple(repr((layer[1:], channels, common)) for layer, channels in
                 zip(cfg["backbone"] + cfg["head"], layer_channels(cfg)))


class LayerFeatureCache:
    """Fused-graph features of architectures at one image size and head, from cached per-layer parts.

    :meth:`features` traces an architecture (build, fuse, shape-only forward) only when one of its
    layers has no cached part; :attr:`traced` and :attr:`summed` count the two outcomes.
    """

    def __init__(self, imgsz: int, head: str, nc: int = 80) -> None:
        self.imgsz, self.head, self.nc = imgsz, head, nc
        self._parts: dict[str, GraphFeatures] = {}
        self.traced = 0
        self.summed = 0

    def features(self, arch: Architecture, model: Any = None) -> GraphFeatures:
        """The features of ``arch``'s deployed graph; ``model``: its built model, when the caller has one (spares a
        build on a miss)."""
        keys = layer_keys(arch, self.nc)
        if any(k not in self._parts for k in keys):
            from trainers.model.build import build_model

            parts = layer_features(model if model is not None else build_model(arch, nc=self.nc), self.imgsz,
                                   self.head)
            if len(parts) != len(keys):
                raise ValueError(f"architecture {arch.hash}: {len(parts)} layers traced, {len(keys)} keyed")
            self._parts.update(zip(keys, parts))
            self.traced += 1
        else:
            self.summed += 1
        return merge(self._parts[k] for k in keys)

    def __len__(self) -> int:
        return len(self._parts)


_SHARED: dict[tuple[int, str, int], LayerFeatureCache] = {}


def shared_cache(imgsz: int, head: str, nc: int) -> LayerFeatureCache:
    """This process's :class:`LayerFeatureCache` for ``(imgsz, head, nc)`` (a search predicts hundreds of
    architectures in one process)."""
    return _SHARED.setdefault((imgsz, head, nc), LayerFeatureCache(imgsz, head, nc))
