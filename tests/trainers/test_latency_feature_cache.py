"""Features from cached per-layer parts equal a full trace (:mod:`trainers.latency.feature_cache`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from search.space import SearchSpace
from search.space.corners import samples
from search.space.presets import load_preset, preset_names
from trainers.latency.feature_cache import LayerFeatureCache, layer_channels, layer_keys, model_dict
from trainers.latency.features import GraphFeatures, graph_features
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import build_model

REPO = Path(__file__).resolve().parents[2]
IMGSZ = 64


def _architectures() -> list[Architecture]:
    """Draws of both shipped spaces and every preset (RepViT backbones, RepConv head stems, RepBlock stages)."""
    archs = [Architecture.baseline()]
    for name, n in (("yolo26.yaml", 4), ("yolo26_wide.yaml", 4)):
        archs += list(samples(SearchSpace.load(REPO / "spaces" / name), n, seed=5).values())
    archs += [load_preset(name).architecture for name in preset_names()]
    return archs


def _same(a: GraphFeatures, b: GraphFeatures) -> bool:
    x, y = a.as_dict(), b.as_dict()
    return a.ops == b.ops and a.unknown == b.unknown and set(x) == set(y) and all(
        x[k] == pytest.approx(y[k], rel=1e-9, abs=1e-12) for k in x)


def _channels_of_built(model: torch.nn.Module) -> list[tuple[tuple[int, ...], int]]:
    """Each layer's input and output channels as a real forward sees them (the Detect head's output as 0)."""
    seen: list[tuple[tuple[int, ...], int]] = []
    layers = list(model.model)
    last = layers[-1]
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((
        tuple(x.shape[1] for x in (args[0] if isinstance(args[0], list) else [args[0]])),
        0 if m is last else out.shape[1]))) for layer in layers]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, IMGSZ, IMGSZ))
    for h in hooks:
        h.remove()
    return seen


def test_the_cached_sum_equals_a_full_trace_architecture_by_architecture() -> None:
    archs = _architectures()
    # Recombinations of layers already seen: every layer of these is cached, so they are summed, not traced.
    a, b = Architecture.baseline(), archs[1]
    mixed = Architecture.create(dict(a.stages[:4] + b.stages[4:]), base=b.base, scale=b.scale)
    archs += [b, mixed] if all(c.width == 1.0 and c.depth is None for _, c in b.stages) else [b]
    cache = LayerFeatureCache(IMGSZ, "nms_free", nc=80)
    for arch in archs:
        model = build_model(arch, nc=80)
        first = 0 if arch.backbone == "yolo26" else 9  # a RepViT backbone's layers are keyed by its name
        assert layer_channels(model_dict(arch))[first:] == _channels_of_built(model)[first:], arch.hash
        assert _same(cache.features(arch), graph_features(model, IMGSZ, "nms_free")), arch.hash
    assert cache.summed >= 1 and cache.traced + cache.summed == len(archs)


def test_channels_follow_parse_model_whatever_the_class_count_and_scale() -> None:
    narrow = Architecture.create({"p2_backbone": StageChoice(width=0.25)})
    for arch, nc in ((narrow, 64), (Architecture.baseline(scale="s"), 64), (Architecture.baseline(), 16)):
        assert layer_channels(model_dict(arch)) == _channels_of_built(build_model(arch, nc=nc)), (arch.scale, nc)


def test_a_layer_key_changes_with_everything_that_changes_the_layer() -> None:
    base = Architecture.baseline()
    keys = layer_keys(base, 80)
    p3 = dict(base.stages)["p3_backbone"]
    cases = {
        "block": (replace(p3, block="RepViT"), {4}),
        "downsample": (replace(p3, downsample="RepConv"), {3}),
        "width": (replace(p3, width=0.5), {4}),  # and every layer that reads the stage's channels
    }
    for what, (choice, changed) in cases.items():
        other = layer_keys(Architecture.create({"p3_backbone": choice}), 80)
        differ = {i for i, (k, o) in enumerate(zip(keys, other)) if k != o}
        assert changed <= differ, what
        if what != "width":
            assert differ == changed, what
    assert layer_keys(base, 3) != keys  # the class count shapes the head
    m, large = (layer_keys(Architecture.baseline(scale=s), 80) for s in ("m", "l"))
    assert all(a != b for a, b in zip(m, large))  # same widths and channel limit, other depth multiple
    stem = layer_keys(Architecture.create({}, head_stem="repconv"), 80)
    assert [i for i, (k, o) in enumerate(zip(keys, stem)) if k != o] == [len(keys) - 1]


def test_a_conv_choice_is_the_only_difference_in_its_own_layer_key() -> None:
    choice = StageChoice(block="C3k2_RVB_SE", se="in_blocks", kernels=(3, 5), downsample="OREPA")
    arch = Architecture.create({"p4_backbone": choice})
    plain = Architecture.create({"p4_backbone": replace(choice, downsample="Conv")})
    assert layer_keys(arch, 80)[6] == layer_keys(plain, 80)[6]  # the C3k2 layer holds no downsample conv
    assert layer_keys(arch, 80)[5] != layer_keys(plain, 80)[5]
