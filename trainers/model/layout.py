"""YOLO26's stage table as Ultralytics lays it out: layer indices, stock repeats and depth multiples.

Pure data and arithmetic (no torch, no Ultralytics import): read by :mod:`trainers.model.architecture`
(stock depths), by space validation, and by :mod:`trainers.model.yolo26` (the stage builders).
"""

from __future__ import annotations

# Stage name -> (layer index of the C3k2 in stock yolo26.yaml, index of the stride-2 Conv before it or None).
STAGE_LAYERS: dict[str, tuple[int, int | None]] = {
    "p2_backbone": (2, 1),
    "p3_backbone": (4, 3),
    "p4_backbone": (6, 5),
    "p5_backbone": (8, 7),
    "p4_neck": (13, None),
    "p3_out": (16, None),
    "p4_out": (19, 17),
    "p5_out": (22, 20),
}

# The stages of YOLO26's backbone: a RepViT backbone takes the place of all four (and of their stride-2 convs).
BACKBONE_STAGES: tuple[str, ...] = ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone")
# Strides of stock yolo26.yaml's layers 0-8 (two stem convs, then each backbone stage's stride-2 conv and C3k2):
# the layers a RepViT backbone replaces. The neck reads layers 4 (P3) and 6 (P4); SPPF reads layer 8 (P5).
BACKBONE_LAYER_STRIDES: tuple[int, ...] = (2, 2, 1, 2, 1, 2, 1, 2, 1)

# Stage name -> the repeats stock yolo26.yaml writes for its C3k2 (before the scale's depth multiple).
STAGE_REPEATS: dict[str, int] = {name: 1 if name == "p5_out" else 2 for name in STAGE_LAYERS}
# Scale -> the depth multiple of yolo26.yaml's ``scales`` (kept here so a stage's stock depth is known
# without importing Ultralytics; tests/trainers/test_build.py checks both tables against the YAML).
DEPTH_MULTIPLES: dict[str, float] = {"n": 0.5, "s": 0.5, "m": 0.5, "l": 1.0, "x": 1.0}
# Modules of yolo26.yaml whose ``args[0]`` is the output channels that ``parse_model`` scales by width;
# the other modules it names take their channels from their inputs.
CHANNEL_MODULES = frozenset({"Conv", "C3k2", "SPPF", "C2PSA"})
PASSTHROUGH_MODULES = frozenset({"nn.Upsample", "Concat", "Detect"})


def scaled_repeats(n: int, depth_multiple: float) -> int:
    """The blocks a layer written with ``n`` repeats gets (Ultralytics' ``parse_model`` rule)."""
    return max(round(n * depth_multiple), 1) if n > 1 else n


def stock_depth(scale: str, stage: str) -> int:
    """The number of blocks of ``stage``'s C3k2 in the stock ``yolo26<scale>`` model."""
    return scaled_repeats(STAGE_REPEATS[stage], DEPTH_MULTIPLES[scale])


def repeats_for_depth(depth: int, depth_multiple: float) -> int:
    """The repeats to write in the model dict so that ``parse_model`` builds ``depth`` blocks."""
    for n in range(1, 4 * depth + 8):
        if scaled_repeats(n, depth_multiple) == depth:
            return n
    raise ValueError(f"depth {depth} cannot be built with depth multiple {depth_multiple}")
