"""The RepViT network of the paper (Wang et al., CVPR 2024) as a feature extractor: its stem and four stages.

``RepViTNet(REPVIT_CONFIGS["m0_6"])`` is the reference's ``repvit_m0_6`` without its classifier:

- stem: 3x3 stride-2 conv+BN, GELU, 3x3 stride-2 conv+BN (stride 4, ``channels[0]`` wide, half
  that in between);
- four stages of :class:`blocks.repvit.RepViTBlock` (3x3 depthwise token mixer, expansion-2 GELU
  channel mixer); stages 2-4 start with the stride-2 block (depthwise stride-2 conv, SE where the
  config says, 1x1 conv to the new width), so the stages end at strides 4, 8, 16 and 32;
- the SE where the config puts it, with the reference's hidden width ``make_divisible(c / 4, 8)``
  (timm's ``SqueezeExcite(c, 0.25)``), not the search's ``c // reduction``.

``forward`` returns the four stage outputs. The same weights give the same features as the
reference (``tests/blocks/test_repvit_backbone.py``, through :func:`reference_key`), and its
parameter counts are the paper's. Fused form: every block fused (:class:`RepViTBlock`) and the stem
folded; the SEs and GELUs stay.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from blocks._fuse import ConvBN, Reparameterizable, check_positive
from blocks.repvit import RepViTBlock, reparameterize_container
from blocks.repvit_configs import RepViTConfig
from blocks.se import EfficientSE

__all__ = ["RepViTNet", "from_reference_state_dict", "reference_key", "repvit_se", "repvit_se_hidden"]


def repvit_se_hidden(channels: int) -> int:
    """The reference SE's hidden width: ``make_divisible(channels / 4, 8)`` rounded to nearest, at least 8."""
    return max(8, int(channels / 4 + 4) // 8 * 8)


def repvit_se(channels: int) -> EfficientSE:
    """RepViT's squeeze-excitation over ``channels``: an ``EfficientSE`` with the reference's hidden width."""
    hidden = repvit_se_hidden(channels)
    return EfficientSE(channels, reduction=max(1, channels // hidden), hidden=hidden)


def scaled_width(channels: int, width: float) -> int:
    """``channels * width`` rounded up to a multiple of 8 (every width of the paper is one already)."""
    return max(8, math.ceil(channels * width / 8) * 8)


class RepViTNet(Reparameterizable):
    """RepViT feature extractor: conv stem, then four stages; returns their outputs (strides 4, 8, 16, 32).

    Shapes: ``(B, in_channels, H, W) -> [(B, channels[i], H / 2^(i+2), W / 2^(i+2)) for i in 0..3]``
    (``ceil`` for odd sizes).

    Args:
        config: the paper's configuration (:data:`blocks.repvit_configs.REPVIT_CONFIGS`).
        width: multiplier of every stage's width, rounded up to a multiple of 8 (1.0: the paper's).
        in_channels: image channels.
    """

    def __init__(self, config: RepViTConfig, width: float = 1.0, in_channels: int = 3):
        super().__init__()
        check_positive(in_channels, "in_channels")
        if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width < math.inf):
            raise ValueError(f"width must be a positive number, got {width!r}")
        self.config = config
        self.channels = tuple(scaled_width(s.channels, width) for s in config.stages)
        c = self.channels[0]
        self.stem = nn.Sequential(ConvBN(in_channels, c // 2, 3, 2, act=nn.GELU()), ConvBN(c // 2, c, 3, 2))
        stages = []
        for i, (stage, c2) in enumerate(zip(config.stages, self.channels)):
            blocks = []
            for j, se in enumerate(stage.se):
                blocks.append(RepViTBlock(c, c2, s=2 if i > 0 and j == 0 else 1, se=se, se_module=repvit_se))
                c = c2
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the four stages."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def reparameterize(self) -> bool:
        """Fuse every block and fold the stem; ``False`` if already fused."""
        return reparameterize_container(self)

    def extra_repr(self) -> str:
        return f"config={self.config.name!r}, channels={self.channels}"


_FEATURE = re.compile(r"features\.(\d+)\.(.+)")


def reference_key(key: str, config: RepViTConfig) -> str | None:
    """The :class:`RepViTNet` key of a key of the reference ``RepViT`` (THU-MIG/RepViT ``model/repvit.py``).

    ``features.0.{0,2}.`` (the stem's two conv+BN) -> ``stem.{0,1}.``; ``features.k.`` (block ``k``,
    counted from 1 over all stages) -> ``stages.i.j.``; inside a block, the reference's conv+BN
    ``c`` is our ``conv``, and its channel mixer ``m.0``/``m.2`` our ``pw1``/``pw2``. ``None`` for
    the classifier (a backbone has none). ``ValueError`` for a key the reference does not have.
    """
    if key.startswith("classifier."):
        return None
    m = _FEATURE.fullmatch(key)
    if m is None:
        raise ValueError(f"not a key of the reference RepViT: {key!r}")
    index, rest = int(m.group(1)), m.group(2)
    parts = ["conv" if p == "c" else p for p in rest.split(".")]
    if index == 0:
        stem = {"0": "0", "2": "1"}.get(parts[0])
        if stem is None:
            raise ValueError(f"not a key of the reference RepViT's stem: {key!r}")
        return ".".join(["stem", stem, *parts[1:]])
    block = ".".join(parts).replace("channel_mixer.m.0.", "channel_mixer.pw1.")
    block = block.replace("channel_mixer.m.2.", "channel_mixer.pw2.")
    first = 1
    for i, stage in enumerate(config.stages):
        if index < first + stage.depth:
            return f"stages.{i}.{index - first}.{block}"
        first += stage.depth
    raise ValueError(f"block {index} of the reference is past config {config.name!r}'s {first - 1} blocks: {key!r}")


def from_reference_state_dict(state: Mapping[str, torch.Tensor], config: RepViTConfig) -> dict[str, torch.Tensor]:
    """A reference ``RepViT`` state dict (an official checkpoint's ``model``) renamed for :class:`RepViTNet`.

    The classifier is left out; load the result with ``RepViTNet(config).load_state_dict(...)``.
    """
    out = {}
    for key, value in state.items():
        ours = reference_key(key, config)
        if ours is not None:
            out[ours] = value
    return out
