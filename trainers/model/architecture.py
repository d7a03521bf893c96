"""What a searched model is: one frozen, hashable, JSON-serialisable description.

An :class:`Architecture` names the base config, the scale, per stage of YOLO26 the
block, its options, its width and its depth, and the Detect head's cls/reg stems (``head_stem``:
YOLO26's own convs, or ``head_stem_layers`` RepConv blocks). Choices that do not apply to a stage's block (SE
options for stock C3k2, kernels for OREPA, SE ratios when SE is off) are dropped when it is
built, so they never change its hash; neither do stock values (width 1.0, the scale's own
depth, the stock head stem), so architectures written before widths, depths and head stems existed
keep their hash.

The backbone is YOLO26's own (``yolo26``, the default, not written into the architecture) or a RepViT
configuration of the paper (``repvit_m0_6`` ...) in place of the whole YOLO26 backbone: then the four
backbone stages do not exist, take no choice (a choice there is an error), and are left out of the
dict and the hash; the neck stages keep theirs. Pure data: no torch import.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blocks.registry import (
    DEFAULT_BACKBONE,
    DEFAULT_HEAD_STEM_LAYERS,
    HEAD_STEM_LAYERS,
    HEAD_STEMS,
    repvit_config_name,
    stage_block,
)
from trainers.model.layout import BACKBONE_STAGES, STAGE_LAYERS, stock_depth

SCALES: tuple[str, ...] = ("n", "s", "m", "l", "x")
WIDTH_MIN, WIDTH_MAX, WIDTH_STEP = 0.25, 2.0, 0.125
WIDTH_RULE = f"a multiple of {WIDTH_STEP} in [{WIDTH_MIN}, {WIDTH_MAX}]"
DEPTH_MIN, DEPTH_MAX = 1, 8


def is_width(value: object) -> bool:
    """Whether ``value`` is a stage width: a number (not a bool) that is :data:`WIDTH_RULE`.

    Multiples of 1/8 are exact binary fractions: a width prints, hashes and compares the same everywhere.
    """
    # The range is compared first: NaN and infinities fail it, and so does an integer too large for a float.
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and WIDTH_MIN <= value <= WIDTH_MAX
            and float(value / WIDTH_STEP).is_integer())


def is_depth(value: object) -> bool:
    """Whether ``value`` is a stage depth: an integer (not a bool) in ``[DEPTH_MIN, DEPTH_MAX]``."""
    return isinstance(value, int) and not isinstance(value, bool) and DEPTH_MIN <= value <= DEPTH_MAX


@dataclass(frozen=True)
class StageChoice:
    """The choices of one stage. Build with :meth:`canonical` to drop what does not apply.

    ``width`` multiplies the stage's stock output channels (1.0: stock); ``depth`` is its number
    of blocks (``None``: the scale's stock depth, 1 for every stage of ``yolo26n``).
    """

    block: str = "C3k2"
    se: str = "none"
    se_kind: str = "fixed"
    se_reduction: int = 4
    se_min_ratio: int = 4
    se_max_ratio: int = 16
    kernels: tuple[int, ...] = (3,)
    downsample: str | None = "Conv"
    width: float = 1.0
    depth: int | None = None

    def canonical(self, has_downsample: bool, scale_depth: int) -> StageChoice:
        """Return the same stage with every choice that does not apply reset to its default.

        A ``depth`` equal to ``scale_depth`` (the stage's stock depth at its scale) becomes ``None``.
        ``ValueError`` on a width or depth out of range.
        """
        if not is_width(self.width):
            raise ValueError(f"width must be {WIDTH_RULE}, got {self.width!r}")
        if self.depth is not None and not is_depth(self.depth):
            raise ValueError(f"depth must be an integer in [{DEPTH_MIN}, {DEPTH_MAX}], got {self.depth!r}")
        spec = stage_block(self.block)
        d = StageChoice()
        se = self.se if self.se in spec.se_placements else "none"
        out = replace(self, se=se, kernels=tuple(sorted(self.kernels)) if spec.uses_kernels else d.kernels,
                      width=float(self.width), depth=None if self.depth == scale_depth else self.depth)
        if se == "none":
            out = replace(out, se_kind=d.se_kind, se_reduction=d.se_reduction)
        if se == "none" or out.se_kind == "fixed":
            out = replace(out, se_min_ratio=d.se_min_ratio, se_max_ratio=d.se_max_ratio)
        if se != "none" and out.se_kind == "dynamic":
            out = replace(out, se_reduction=d.se_reduction)
        return replace(out, downsample=(self.downsample or "Conv") if has_downsample else None)

    def to_dict(self) -> dict[str, Any]:
        """The applicable choices as plain JSON data (call on a canonical choice)."""
        out: dict[str, Any] = {"block": self.block}
        if self.se != "none":
            se: dict[str, Any] = {"placement": self.se, "kind": self.se_kind}
            if self.se_kind == "fixed":
                se["reduction"] = self.se_reduction
            else:
                se.update(min_ratio=self.se_min_ratio, max_ratio=self.se_max_ratio)
            out["se"] = se
        if stage_block(self.block).uses_kernels:
            out["kernels"] = list(self.kernels)
        if self.downsample is not None:
            out["downsample"] = self.downsample
        if self.width != 1.0:
            out["width"] = self.width
        if self.depth is not None:
            out["depth"] = self.depth
        return out

    def label(self) -> str:
        """The block, then ``x<width>`` and ``d<depth>`` where they are not stock: ``RepViT x0.75 d2``, ``C3k2``."""
        width = f" x{self.width:g}" if self.width != 1.0 else ""
        depth = f" d{self.depth}" if self.depth is not None else ""
        return f"{self.block}{width}{depth}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageChoice:
        """Inverse of :meth:`to_dict`."""
        se = data.get("se") or {}
        return cls(
            block=data.get("block", "C3k2"),
            se=se.get("placement", "none"),
            se_kind=se.get("kind", "fixed"),
            se_reduction=int(se.get("reduction", 4)),
            se_min_ratio=int(se.get("min_ratio", 4)),
            se_max_ratio=int(se.get("max_ratio", 16)),
            kernels=tuple(int(k) for k in data.get("kernels", (3,))),
            downsample=data.get("downsample", "Conv"),
            width=data.get("width", 1.0),
            depth=data.get("depth"),
        )


def _canonical_stages(stages: dict[str, StageChoice], scale: str = "n") -> tuple[tuple[str, StageChoice], ...]:
    unknown = sorted(set(stages) - set(STAGE_LAYERS))
    if unknown:
        raise ValueError(f"stage must be one of {list(STAGE_LAYERS)}, got {unknown[0]!r}")
    out = []
    for name in STAGE_LAYERS:
        try:
            choice = stages.get(name, StageChoice()).canonical(STAGE_LAYERS[name][1] is not None,
                                                               stock_depth(scale, name))
        except ValueError as e:
            raise ValueError(f"stage {name}: {e}") from None
        out.append((name, choice))
    return tuple(out)


def stages_of_backbone(backbone: str) -> tuple[str, ...]:
    """The stages that take choices with ``backbone``: all of them with ``yolo26``, the neck stages with RepViT."""
    if repvit_config_name(backbone) is None:
        return tuple(STAGE_LAYERS)
    return tuple(n for n in STAGE_LAYERS if n not in BACKBONE_STAGES)


def _check_backbone_stages(stages: tuple[tuple[str, StageChoice], ...], backbone: str, scale: str) -> None:
    """``ValueError`` naming the stage when a backbone stage has a choice that a RepViT backbone cannot apply."""
    allowed = stages_of_backbone(backbone)
    stock = dict(_canonical_stages({}, scale))
    for name, choice in stages:
        if name not in allowed and choice != stock[name]:
            raise ValueError(f"stage {name}: a backbone stage takes choices only with backbone {DEFAULT_BACKBONE!r}; "
                             f"with backbone {backbone!r} the stages that take choices are {list(allowed)}, got "
                             f"{name} {choice.to_dict()}")


def canonical_head_stem(stem: str, layers: int) -> tuple[str, int]:
    """``(stem, layers)`` with the layer count reset to its default for the stock stem (where it does not apply).

    ``ValueError`` naming the field and the allowed values for an unknown stem or a layer count out of range.
    """
    if stem not in HEAD_STEMS:
        raise ValueError(f"head_stem must be one of {list(HEAD_STEMS)}, got {stem!r}")
    if stem == "stock":
        return stem, DEFAULT_HEAD_STEM_LAYERS
    if not isinstance(layers, int) or isinstance(layers, bool) or layers not in HEAD_STEM_LAYERS:
        raise ValueError(f"head_stem_layers must be one of {list(HEAD_STEM_LAYERS)}, got {layers!r}")
    return stem, layers


@dataclass(frozen=True)
class Architecture:
    """A YOLO26 detector: base config, scale, one :class:`StageChoice` per stage, its backbone and the head's stems.

    With a RepViT ``backbone`` the backbone stages hold the stock choice and are not built.
    ``head_stem``: the Detect head's per-scale cls and reg stems, ``"stock"`` (YOLO26's convs) or
    ``"repconv"`` (``head_stem_layers`` RepConv blocks each, then the stock prediction conv).
    """

    base: str = "yolo26.yaml"
    scale: str = "n"
    stages: tuple[tuple[str, StageChoice], ...] = field(default_factory=lambda: _canonical_stages({}))
    backbone: str = DEFAULT_BACKBONE
    head_stem: str = "stock"
    head_stem_layers: int = DEFAULT_HEAD_STEM_LAYERS

    @classmethod
    def create(cls, stages: dict[str, StageChoice] | None = None, base: str = "yolo26.yaml",
               scale: str = "n", backbone: str = DEFAULT_BACKBONE, head_stem: str = "stock",
               head_stem_layers: int = DEFAULT_HEAD_STEM_LAYERS) -> Architecture:
        """Build a canonical architecture; stages not given are the stock C3k2 with a plain Conv.

        ``ValueError`` for an unknown scale, backbone or head stem, a head stem layer count out of range,
        or a backbone stage with a choice that is not stock while the backbone is a RepViT one.
        """
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
        repvit_config_name(backbone)
        canonical = _canonical_stages(stages or {}, scale)
        _check_backbone_stages(canonical, backbone, scale)
        stem, layers = canonical_head_stem(head_stem, head_stem_layers)
        return cls(base=base, scale=scale, stages=canonical, backbone=backbone, head_stem=stem,
                   head_stem_layers=layers)

    @classmethod
    def baseline(cls, base: str = "yolo26.yaml", scale: str = "n") -> Architecture:
        """The stock all-C3k2 model."""
        return cls.create({}, base=base, scale=scale)

    def stage(self, name: str) -> StageChoice:
        """The choice of stage ``name``."""
        return dict(self.stages)[name]

    @property
    def is_baseline(self) -> bool:
        """Whether this is exactly the stock model."""
        return self == Architecture.baseline(self.base, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: base, scale, the applicable choices of each stage, a backbone that is not ``yolo26``
        and the head stem where not stock."""
        built = stages_of_backbone(self.backbone)
        out: dict[str, Any] = {"base": self.base, "scale": self.scale,
                               "stages": {n: s.to_dict() for n, s in self.stages if n in built}}
        if self.backbone != DEFAULT_BACKBONE:
            out["backbone"] = self.backbone
        if self.head_stem != "stock":
            out.update(head_stem=self.head_stem, head_stem_layers=self.head_stem_layers)
        return out

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of the canonical choices (same in every process)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """Inverse of :meth:`to_dict`; also reads a ``search.space sample`` line.

        A ``hash`` key, when present, must match the rebuilt architecture.
        """
        stages = {n: StageChoice.from_dict(s) for n, s in (data.get("stages") or {}).items()}
        arch = cls.create(stages, base=data.get("base", "yolo26.yaml"), scale=data.get("scale", "n"),
                          backbone=data.get("backbone", DEFAULT_BACKBONE),
                          head_stem=data.get("head_stem", "stock"),
                          head_stem_layers=data.get("head_stem_layers", DEFAULT_HEAD_STEM_LAYERS))
        if "hash" in data and data["hash"] != arch.hash:
            raise ValueError(f"hash does not match the choices: file says {data['hash']!r}, got {arch.hash!r}")
        return arch

    def to_json(self) -> str:
        """One JSON line with the choices and the hash."""
        return json.dumps({"hash": self.hash, **self.to_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def head_label(self) -> str:
        """The head stem in words where it is not stock (``repconv head, 2 layers``), else an empty string."""
        if self.head_stem == "stock":
            return ""
        return f"{self.head_stem} head, {self.head_stem_layers} layer{'s' if self.head_stem_layers > 1 else ''}"

    def blocks_summary(self) -> str:
        """Per-stage :meth:`StageChoice.label` in stage order, e.g. ``C3k2/RepViT x0.75 d2/...``, then the head stem.

        With a RepViT backbone, its name takes the place of the backbone stages: ``repvit_m0_6/C3k2/...``.
        A head stem that is not stock follows after `` + ``: ``C3k2/.../C3k2 + repconv head, 2 layers``.
        """
        built = stages_of_backbone(self.backbone)
        labels = [s.label() for n, s in self.stages if n in built]
        stages = "/".join(labels if self.backbone == DEFAULT_BACKBONE else [self.backbone, *labels])
        return f"{stages} + {self.head_label()}" if self.head_stem != "stock" else stages


def read_architecture(path: Path, flag: str = "--arch") -> Architecture:
    """Read an architecture JSON file (one line of ``search.space sample``); ``ValueError`` naming ``flag`` if bad."""
    try:
        text = path.read_text(encoding="utf-8").strip().splitlines()
        return Architecture.from_dict(json.loads(text[0]) if text else {"": None})
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag} {path}: not a JSON architecture line ({e.__class__.__name__})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{flag} {path}: {e}") from None
