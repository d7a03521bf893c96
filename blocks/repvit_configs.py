"""The RepViT paper's network configurations (Wang et al., CVPR 2024), M0.6 to M2.3, as plain data.

No torch import: a search space names a backbone (``repvit_m0_6``) before anything heavy is imported.
The network itself is :class:`blocks.repvit_backbone.RepViTNet`.

Read from the official code (THU-MIG/RepViT, ``model/repvit.py``, functions ``repvit_m0_6`` ...
``repvit_m2_3``), whose configs list one row per block ``[k, t, c, SE, HS, s]``. In every row there
the kernel is 3, the expansion 2 and the activation GELU (``HS`` picks GELU either way); a new stage
starts where the stride is 2. So a configuration is, per stage, its width and which of its blocks
have an SE. ``tests/blocks/test_repvit_backbone.py`` checks these tables block by block against the
reference's own modules (the fixture ``tests/blocks/data/repvit_reference.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REPVIT_CONFIGS", "RepViTConfig", "RepViTStage"]


@dataclass(frozen=True)
class RepViTStage:
    """One stage of a RepViT network.

    Attributes:
        channels: the stage's output width in the paper.
        se: one flag per block, whether its token mixer has an SE. In stages 2-4 the first block
            is the stride-2 downsampling block (depthwise stride-2 conv, SE, 1x1 conv to the width).
    """

    channels: int
    se: tuple[bool, ...]

    @property
    def depth(self) -> int:
        """The number of blocks in the stage."""
        return len(self.se)


@dataclass(frozen=True)
class RepViTConfig:
    """A RepViT network: four stages after a stride-4 conv stem (strides 4, 8, 16 and 32)."""

    name: str
    stages: tuple[RepViTStage, ...]


def _config(name: str, *stages: tuple[int, str]) -> RepViTConfig:
    """A config from ``(width, SE flags as '0'/'1' per block)`` per stage."""
    return RepViTConfig(name, tuple(RepViTStage(c, tuple(f == "1" for f in flags)) for c, flags in stages))


REPVIT_CONFIGS: dict[str, RepViTConfig] = {
    c.name: c
    for c in (
        _config("m0_6", (40, "10"), (80, "010"), (160, "0101010100"), (320, "01")),
        _config("m0_9", (48, "100"), (96, "0100"), (192, "0101010101010100"), (384, "010")),
        _config("m1_0", (56, "100"), (112, "0100"), (224, "0101010101010100"), (448, "010")),
        _config("m1_1", (64, "100"), (128, "0100"), (256, "01010101010100"), (512, "010")),
        _config("m1_5", (64, "10100"), (128, "010100"), (256, "01010101010101010101010100"), (512, "01010")),
        _config("m2_3", (80, "1010100"), (160, "01010100"), (320, "010101010101010101010101010101010100"),
                (640, "010")),
    )
}
"""Config name (``m0_6`` ... ``m2_3``, the names of the reference's model functions without ``repvit_``) -> config."""
