"""Stage width and depth: the model dict is resized before Ultralytics parses it, so every later layer and
the head follow; stock values leave the stock model; a resized architecture trains, fuses and survives
its ``model.yaml`` (what a checkpoint is rebuilt from).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from build_helpers import assert_trains_and_fuses, shapes_of
from torch import nn

from trainers.deploy.inference import count_params
from trainers.model.architecture import SCALES, Architecture, StageChoice
from trainers.model.build import architecture_of, build_model, model_from_yaml
from trainers.model.layout import (
    CHANNEL_MODULES,
    DEPTH_MULTIPLES,
    PASSTHROUGH_MODULES,
    STAGE_LAYERS,
    STAGE_REPEATS,
    stock_depth,
)
from trainers.model.yolo26 import resized_model_dict

pytestmark = pytest.mark.usefixtures("one_thread")

STOCK_N_PARAMS = 2_572_280
IMGSZ = 64
# Output channels of each stage of the stock yolo26n (its width multiple 0.25 applied).
STOCK_N_CHANNELS = {"p2_backbone": 64, "p3_backbone": 128, "p4_backbone": 128, "p5_backbone": 256,
                    "p4_neck": 128, "p3_out": 64, "p4_out": 128, "p5_out": 256}
# Every block family at a non-stock width and depth, including a stage that feeds Detect and one
# whose stride-2 conv is re-parameterized.
SHAPED = Architecture.create({
    "p2_backbone": StageChoice(width=0.5, depth=2),
    "p3_backbone": StageChoice(block="RepViT", se="in_blocks", se_reduction=8, kernels=(3, 5), width=1.25, depth=2,
                               downsample="RepConv"),
    "p4_backbone": StageChoice(block="C3k2_RVB_SE", se="after_concat", kernels=(3,), width=0.75, depth=3),
    "p5_backbone": StageChoice(block="OREPA", width=1.25, downsample="OREPA"),
    "p3_out": StageChoice(width=0.75, depth=2),
    "p5_out": StageChoice(block="RepViT", kernels=(3,), width=0.5),
})
EVERY_STAGE = {w: Architecture.create({n: StageChoice(width=w) for n in STAGE_LAYERS}) for w in (0.5, 1.25)}


def stage_outputs(model: Any, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Stage name -> (output channels, number of blocks) of ``model``, channels seen in a forward pass."""
    seen: dict[int, int] = {}
    hooks = [model.model[idx].register_forward_hook(lambda m, i, o, idx=idx: seen.__setitem__(idx, o.shape[1]))
             for idx, _ in STAGE_LAYERS.values()]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    layers = model.model
    return {name: (seen[idx], len(layers[idx]) if isinstance(layers[idx], nn.Sequential) else len(layers[idx].m))
            for name, (idx, _) in STAGE_LAYERS.items()}


def expected_channels(arch: Architecture) -> dict[str, int]:
    """Stage name -> ``make_divisible(stock channels * width, 8)`` on yolo26n."""
    return {n: math.ceil(STOCK_N_CHANNELS[n] * c.width / 8) * 8 for n, c in arch.stages}


# ---------------------------------------------------------------------------------------------- the tables


@pytest.mark.parametrize("scale", SCALES)
def test_stage_tables_match_the_ultralytics_yaml(scale: str) -> None:
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(f"yolo26{scale}.yaml")
    assert cfg["scales"][scale][0] == DEPTH_MULTIPLES[scale]
    layers = cfg["backbone"] + cfg["head"]
    for name, (idx, _) in STAGE_LAYERS.items():
        assert layers[idx][2] == "C3k2" and layers[idx][1] == STAGE_REPEATS[name], name
    assert {m for _, _, m, _ in layers} <= CHANNEL_MODULES | PASSTHROUGH_MODULES
    assert [stock_depth(scale, n) for n in STAGE_LAYERS] == ([2] * 7 + [1] if scale in "lx" else [1] * 8)


def test_stock_widths_and_depths_leave_the_stock_dict_and_model() -> None:
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load("yolo26n.yaml")
    assert resized_model_dict(cfg, Architecture.baseline().stages) is cfg
    explicit = Architecture.create({n: StageChoice(width=1.0, depth=1) for n in STAGE_LAYERS})
    assert explicit == Architecture.baseline() and explicit.hash == "4131aa0f85ac"
    model = build_model(explicit, nc=80)
    assert count_params(model) == STOCK_N_PARAMS
    assert "scales" in model.yaml and model.yaml["scales"]["n"] == [0.5, 0.25, 1024]


def test_the_stock_dict_is_not_modified() -> None:
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load("yolo26n.yaml")
    before = repr(cfg)
    resized = resized_model_dict(cfg, SHAPED.stages)
    assert repr(cfg) == before and resized is not cfg
    layers = resized["backbone"] + resized["head"]
    assert layers[STAGE_LAYERS["p4_backbone"][0]][:3] == [-1, 6, "C3k2"]  # 3 blocks at depth multiple 0.5
    assert layers[STAGE_LAYERS["p5_out"][0]][3] == [512, True, 0.5, True]  # 128 channels at width multiple 0.25


# ---------------------------------------------------------------------------------------------- building


def test_every_stage_gets_its_width_and_depth_and_the_head_follows() -> None:
    torch.manual_seed(0)
    model = build_model(SHAPED, nc=80)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    got = stage_outputs(model, x)
    want = {n: (expected_channels(SHAPED)[n], c.depth or 1) for n, c in SHAPED.stages}
    assert got == want
    assert got["p3_backbone"] == (160, 2) and got["p4_backbone"] == (96, 3) and got["p2_backbone"] == (32, 2)
    layers = model.model
    assert layers[9].cv1.conv.in_channels == got["p5_backbone"][0]  # SPPF after p5_backbone
    detect = layers[-1]
    heads = [got["p3_out"][0], got["p4_out"][0], got["p5_out"][0]]
    assert [seq[0].conv.in_channels for seq in detect.cv2] == heads
    stock = build_model(Architecture.baseline(), nc=80).eval()
    with torch.no_grad():
        got_out, stock_out = shapes_of(model.eval()(x)), shapes_of(stock(x))
    assert got_out[0] == stock_out[0] == (1, 4 + 80, 8 * 8 + 4 * 4 + 2 * 2)  # the detections: shape unchanged
    assert [f[1] for f in got_out[1]["one2one"]["feats"]] == heads  # the features Detect reads: resized


def test_parameters_grow_with_width_and_depth() -> None:
    base = count_params(build_model(Architecture.baseline(), nc=80))
    narrow, wide = (count_params(build_model(a, nc=80)) for a in EVERY_STAGE.values())
    assert narrow < base == STOCK_N_PARAMS < wide
    one = [count_params(build_model(Architecture.create({"p4_backbone": StageChoice(width=w)}), nc=80))
           for w in (0.75, 1.0, 1.25)]
    assert one[0] < one[1] == base < one[2]
    deeper = count_params(build_model(Architecture.create({"p4_backbone": StageChoice(depth=2)}), nc=80))
    assert deeper > base


def test_width_beyond_max_channels_of_the_scale() -> None:
    """yolo26m clamps p5 to max_channels 512 before its width multiple; a wider p5 is still built exactly."""
    arch = Architecture.create({"p5_backbone": StageChoice(width=1.25), "p4_backbone": StageChoice(width=0.5)},
                               scale="m")
    model = build_model(arch, nc=80)
    layers = model.model
    assert layers[8].cv2.conv.out_channels == 640 and layers[9].cv1.conv.in_channels == 640  # 512 * 1.25, SPPF
    assert layers[6].cv2.conv.out_channels == 256 and layers[7].conv.in_channels == 256  # 512 * 0.5
    assert layers[10].cv2.conv.out_channels == 512  # C2PSA (not a stage) keeps its clamped stock width


@pytest.mark.parametrize("arch", [SHAPED, *EVERY_STAGE.values()], ids=["shaped", "all-0.5", "all-1.25"])
def test_resized_architecture_trains_and_fuses(arch: Architecture) -> None:
    assert_trains_and_fuses(arch, IMGSZ)


def test_resized_architecture_round_trips_through_its_model_yaml(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(SHAPED, nc=3)
    assert model.yaml["architecture"] == SHAPED.to_dict() and model.yaml["architecture_hash"] == SHAPED.hash
    stages = model.yaml["architecture"]["stages"]
    assert stages["p2_backbone"] == {"block": "C3k2", "downsample": "Conv", "width": 0.5, "depth": 2}
    assert stages["p4_neck"] == {"block": "C3k2"}
    rebuilt = model_from_yaml(model.yaml, nc=3)
    assert architecture_of(rebuilt) == SHAPED
    ours, theirs = model.state_dict(), rebuilt.state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    rebuilt.load_state_dict(ours)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    torch.save({"model": model}, tmp_path / "ckpt.pt")  # what Ultralytics' checkpoints hold: the pickled model
    loaded: Any = torch.load(tmp_path / "ckpt.pt", weights_only=False)["model"]
    assert architecture_of(loaded) == SHAPED
    with torch.no_grad():
        expected = model.eval()(x)[0]
        torch.testing.assert_close(rebuilt.eval()(x)[0], expected, rtol=0, atol=0)
        torch.testing.assert_close(loaded.eval()(x)[0], expected, rtol=0, atol=0)
