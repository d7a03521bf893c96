"""The one list of blocks a search space may name, and what each block can be combined with.

Also the head stems a space may name (``HEAD_STEMS``) and their layer counts.

Pure data (no torch import), so a space file can be validated before heavy imports. How a
block enters a YOLO26 model is not known here: ``trainers.model.yolo26.STAGE_BUILDERS`` maps each
name to its stage builder, so adding a block to the search is one entry here plus its builder there.
The backbones a space may name (:data:`BACKBONES`) are listed here too.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks.repvit_configs import REPVIT_CONFIGS

SE_PLACEMENTS: tuple[str, ...] = ("none", "after_concat", "in_blocks")
SE_KINDS: tuple[str, ...] = ("fixed", "dynamic")
DOWNSAMPLES: tuple[str, ...] = ("Conv", "RepConv", "OREPA", "QARepConv")
DEPTHWISE_KERNELS: tuple[int, ...] = (3, 5, 7, 9, 11)
# The per-scale cls/reg stems of the Detect head: YOLO26's own convs, or RepConv blocks (a RepVGG-branch head).
HEAD_STEMS: tuple[str, ...] = ("stock", "repconv")
HEAD_STEM_LAYERS: tuple[int, ...] = (1, 2)  # RepConv layers per stem (the stock stems have 2 convs)
DEFAULT_HEAD_STEM_LAYERS = 2


@dataclass(frozen=True)
class StageBlock:
    """A block a stage may use.

    Attributes:
        name: the name a space file uses.
        se_placements: SE placements that apply to it (``("none",)`` when SE does not apply).
        uses_kernels: whether its depthwise kernel set is a choice.
    """

    name: str
    se_placements: tuple[str, ...]
    uses_kernels: bool


STAGE_BLOCKS: dict[str, StageBlock] = {
    b.name: b
    for b in (
        StageBlock("C3k2", ("none",), False),
        StageBlock("RepViT", ("none", "in_blocks"), True),
        StageBlock("C3k2_RVB_SE", SE_PLACEMENTS, True),
        StageBlock("OREPA", ("none",), False),
        StageBlock("RepBlock", ("none",), False),
    )
}


def stage_block(name: str) -> StageBlock:
    """Return the registry entry for ``name`` or raise ``ValueError`` listing the known blocks."""
    if name not in STAGE_BLOCKS:
        raise ValueError(f"block must be one of {sorted(STAGE_BLOCKS)}, got {name!r}")
    return STAGE_BLOCKS[name]


DEFAULT_BACKBONE = "yolo26"
BACKBONES: tuple[str, ...] = (DEFAULT_BACKBONE, *(f"repvit_{name}" for name in REPVIT_CONFIGS))
"""Backbones a space may name: YOLO26's own (stages searched per stage), or a RepViT configuration of the paper
(:data:`blocks.repvit_configs.REPVIT_CONFIGS`) in place of the whole YOLO26 backbone."""


def repvit_config_name(backbone: str) -> str | None:
    """The RepViT config a backbone name stands for (``"repvit_m0_6"`` -> ``"m0_6"``), ``None`` for ``yolo26``.

    ``ValueError`` listing :data:`BACKBONES` for an unknown name.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
    return None if backbone == DEFAULT_BACKBONE else backbone.removeprefix("repvit_")
