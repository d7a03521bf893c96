"""What a supernet holds: per stage, its block candidates, its downsample candidates, the shape it is built at
and the shapes its paths may take; and the head stem candidates.

Pure data (no torch import), the supernet's counterpart of :class:`~trainers.model.architecture.Architecture`:
a :class:`SupernetSpec` is recorded in the supernet's ``model.yaml["supernet"]`` so a checkpoint
rebuilds it, and :meth:`SupernetSpec.check` says whether an architecture is one of its paths.

Width and depth are elastic (OFA/BigNAS): a supernet is built at the largest (width, depth) of each stage,
and a path may take any of the stage's ``widths`` and ``depths`` (:mod:`trainers.model.elastic` runs it on
the leading slices of the built tensors). Its candidates enumerate the other choices (block, SE
placement/kind/reduction/ratios, kernel set; the stride-2 downsample conv is a separate choice, so the
two factorize). A supernet of one shape per stage (``widths == (width,)``) is what older checkpoints hold. Every stage,
tied ones included, holds its own weights (within a stage, one family's candidates share the layers
they have in common: :mod:`trainers.model.weight_sharing`); a tied stage's candidates are its target's and its
path must repeat its target's choice, as the space's sampler does. The head stem is one more choice
shared by every per-scale branch of the Detect head (:func:`head_key`): ``(("stock", 2),)``, the
default, holds the stock head only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from blocks.registry import DEFAULT_HEAD_STEM_LAYERS
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.layout import STAGE_LAYERS, stock_depth

HeadStem = tuple[str, int]
"""A canonical ``(head_stem, head_stem_layers)`` pair (:func:`trainers.model.architecture.canonical_head_stem`)."""
STOCK_HEAD: tuple[HeadStem, ...] = (("stock", DEFAULT_HEAD_STEM_LAYERS),)


def head_key(stem: str, layers: int) -> str:
    """The candidate key of a canonical head stem: ``stock``, ``repconv1``, ``repconv2``."""
    return stem if stem == "stock" else f"{stem}{layers}"


def choice_key(choice: StageChoice) -> str:
    """The candidate key of a stage choice: its block options, without downsample, width and depth.

    E.g. ``C3k2``, ``RepViT-in_blocks-fixed-r8-k3+5``, ``C3k2_RVB_SE-after_concat-dynamic-r4to16-k3``.
    Call on a canonical choice (from an :class:`Architecture`); the key has no ``.`` (a ``ModuleDict`` key).
    """
    d = choice.to_dict()
    parts = [choice.block]
    if "se" in d:
        se = d["se"]
        ratio = f"r{se['reduction']}" if se["kind"] == "fixed" else f"r{se['min_ratio']}to{se['max_ratio']}"
        parts += [se["placement"], se["kind"], ratio]
    if "kernels" in d:
        parts.append("k" + "+".join(str(k) for k in d["kernels"]))
    return "-".join(parts)


@dataclass(frozen=True)
class StageCandidates:
    """The candidates of one stage of a supernet.

    Attributes:
        blocks: canonical block choices (downsample ``None``, width 1.0, depth ``None``), one module each.
        downsamples: names of the stride-2 conv candidates (``()`` where the stage has no such conv).
        width: the width the stage is built at (the largest of ``widths``).
        depth: the depth it is built at (``None``: the scale's stock depth; the deepest of ``depths``).
        tie: the stage whose choice this one repeats (``None``: its own).
        widths: the widths a path may take (default: ``(width,)``).
        depths: the depths a path may take (canonical: ``None`` for the stock depth; default: ``(depth,)``).
    """

    blocks: tuple[StageChoice, ...] = (StageChoice(downsample=None),)
    downsamples: tuple[str, ...] = ("Conv",)
    width: float = 1.0
    depth: int | None = None
    tie: str | None = None
    widths: tuple[float, ...] = ()
    depths: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        if not self.widths:
            object.__setattr__(self, "widths", (self.width,))
        if not self.depths:
            object.__setattr__(self, "depths", (self.depth,))

    @property
    def elastic(self) -> bool:
        """Whether a path may take a shape other than the built one."""
        return len(self.widths) > 1 or len(self.depths) > 1

    def keys(self) -> tuple[str, ...]:
        """The candidate keys of :attr:`blocks`, in order."""
        return tuple(choice_key(c) for c in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {"blocks": [c.to_dict() for c in self.blocks], "downsamples": list(self.downsamples),
                "width": self.width, "depth": self.depth, "tie": self.tie,
                "widths": list(self.widths), "depths": list(self.depths)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageCandidates:
        """Inverse of :meth:`to_dict`; a stage recorded without ``widths``/``depths`` (older checkpoints): one shape."""
        blocks = tuple(replace(StageChoice.from_dict(b), downsample=None) for b in data["blocks"])
        return cls(blocks=blocks, downsamples=tuple(data["downsamples"]), width=float(data["width"]),
                   depth=data["depth"], tie=data["tie"], widths=tuple(float(w) for w in data.get("widths", ())),
                   depths=tuple(data.get("depths", ())))


@dataclass(frozen=True)
class SupernetSpec:
    """Base config, scale, the :class:`StageCandidates` of every YOLO26 stage (in ``STAGE_LAYERS`` order) and
    the head stem candidates (canonical ``(stem, layers)`` pairs)."""

    base: str
    scale: str
    stages: tuple[tuple[str, StageCandidates], ...]
    head_stems: tuple[HeadStem, ...] = STOCK_HEAD

    def head_keys(self) -> tuple[str, ...]:
        """The candidate keys of :attr:`head_stems`, in order."""
        return tuple(head_key(*h) for h in self.head_stems)

    def stage(self, name: str) -> StageCandidates:
        """The candidates of stage ``name``."""
        return dict(self.stages)[name]

    def shape(self) -> Architecture:
        """The stock architecture at the widths and depths the supernet is built at (what sizes its model dict)."""
        return Architecture.create({n: StageChoice(width=s.width, depth=s.depth) for n, s in self.stages},
                                   base=self.base, scale=self.scale)

    def candidate_counts(self) -> dict[str, tuple[int, int]]:
        """Stage -> (block candidates, downsample candidates); the modules each holds."""
        return {n: (len(s.blocks), len(s.downsamples)) for n, s in self.stages}

    def paths(self) -> int:
        """Number of distinct paths (architectures): products over untied stages, ties repeat their target."""
        total = 1
        for name, s in self.stages:
            if s.tie is None:
                ds = max([len(s.downsamples)] + [len(t.downsamples) for _, t in self.stages if t.tie == name])
                total *= len(s.blocks) * max(ds, 1) * len(s.widths) * len(s.depths)
        return total * len(self.head_stems)

    def built(self, arch: Architecture) -> Architecture:
        """``arch`` at the widths and depths the supernet is built at: the path ``arch``'s tensors are sliced from."""
        return Architecture.create({n: replace(arch.stage(n), width=s.width, depth=s.depth) for n, s in self.stages},
                                   base=arch.base, scale=arch.scale, backbone=arch.backbone,
                                   head_stem=arch.head_stem, head_stem_layers=arch.head_stem_layers)

    def check(self, arch: Architecture) -> None:
        """``ValueError`` naming the stage if ``arch`` is not a path of this supernet (shape, candidate, tie)."""
        if (arch.base, arch.scale) != (self.base, self.scale):
            raise ValueError(f"the supernet is {self.base} scale {self.scale!r}, got {arch.base} scale {arch.scale!r}")
        if (arch.head_stem, arch.head_stem_layers) not in self.head_stems:
            raise ValueError(f"head stem must be one of the supernet's {list(self.head_keys())}, got "
                             f"{head_key(arch.head_stem, arch.head_stem_layers)!r}")
        for name, s in self.stages:
            c = arch.stage(name)
            if c.width not in s.widths or c.depth not in s.depths:
                raise ValueError(f"stage {name}: the supernet holds widths {list(s.widths)} and depths "
                                 f"{[_depth(self.scale, name, d) for d in s.depths]}, got width {c.width} and depth "
                                 f"{_depth(self.scale, name, c.depth)}")
            if choice_key(c) not in s.keys():
                raise ValueError(f"stage {name}: {choice_key(c)!r} is not one of its {len(s.blocks)} candidates")
            if STAGE_LAYERS[name][1] is not None and c.downsample not in s.downsamples:
                raise ValueError(f"stage {name}: downsample must be one of {list(s.downsamples)}, got {c.downsample!r}")
            if s.tie is not None:
                t = arch.stage(s.tie)
                if (c.width, c.depth) != (t.width, t.depth):
                    raise ValueError(f"stage {name} is tied to {s.tie}: got width {c.width} and depth "
                                     f"{_depth(self.scale, name, c.depth)}, {s.tie} has width {t.width} and depth "
                                     f"{_depth(self.scale, s.tie, t.depth)}")
                mine, theirs = choice_key(c), choice_key(t)
                if t.downsample is not None and c.downsample is not None:
                    mine, theirs = f"{mine} + {c.downsample}", f"{theirs} + {t.downsample}"
                if mine != theirs:
                    raise ValueError(f"stage {name} is tied to {s.tie}: got {mine!r}, {s.tie} has {theirs!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what ``model.yaml["supernet"]`` records); ``head_stems`` only when not the stock head."""
        out: dict[str, Any] = {"base": self.base, "scale": self.scale,
                               "stages": {n: s.to_dict() for n, s in self.stages}}
        if self.head_stems != STOCK_HEAD:
            out["head_stems"] = [list(h) for h in self.head_stems]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetSpec:
        """Inverse of :meth:`to_dict`; ``ValueError`` unless every stage of YOLO26 is given, in order."""
        names = list(data["stages"])
        if names != list(STAGE_LAYERS):
            raise ValueError(f"a supernet spec names every stage {list(STAGE_LAYERS)} in order, got {names}")
        heads = tuple((str(stem), int(layers)) for stem, layers in data.get("head_stems", STOCK_HEAD))
        return cls(base=data["base"], scale=data["scale"],
                   stages=tuple((n, StageCandidates.from_dict(s)) for n, s in data["stages"].items()),
                   head_stems=heads)

    @classmethod
    def stock(cls, base: str = "yolo26.yaml", scale: str = "n") -> SupernetSpec:
        """One candidate per stage (the stock C3k2 and Conv): a supernet whose only path is the baseline."""
        return cls(base, scale, tuple((n, StageCandidates(downsamples=("Conv",) if ds is not None else ()))
                                      for n, (_, ds) in STAGE_LAYERS.items()))


def _depth(scale: str, stage: str, depth: int | None) -> int:
    return stock_depth(scale, stage) if depth is None else depth
