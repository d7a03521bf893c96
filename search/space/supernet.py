"""A space's supernet: the candidates of each stage (:func:`supernet_spec`) and a uniform path sampler.

Width and depth are elastic (OFA/BigNAS): each untied stage is built at the largest width and depth the
space allows it, and a path may take any of the space's widths and depths there (its tensors are the
leading slices of the built ones: :mod:`trainers.model.elastic`); tied stages follow their target.
``shape`` pins a stage to one (width, depth) instead. Width is pinned to one (1.0 where the space allows it)
where a narrower RepConv would hold a branch the built one lacks (its identity BatchNorm exists only where
its input and output widths are equal): at a stage with RepBlock candidates, and at the stages feeding the
Detect head when the space has RepConv head stems (:func:`width_pinned`). A stage's block candidates
are every canonical choice the space allows with that shape: per block, its SE options (placement
x kind x reduction or ratio bounds, ``none`` once) times its kernel sets. For ``spaces/yolo26.yaml``:
C3k2 1 + OREPA 1 + RepViT 6 SE x 3 kernel sets + C3k2_RVB_SE 11 SE x 3 = 53 per stage, times 3
downsample candidates, a separate choice module, where the stage has a stride-2 conv. The space's
head stems (stock once, every other stem once per layer count) are the head's candidates.

:func:`sample_path` is the SPOS mutator: each untied stage draws its block family uniformly, then
one of that family's candidates uniformly (as the space's sampler draws the block first, then its
options; a family with 33 SE and kernel variants is not drawn 33 times as often as C3k2), its
downsample candidate, then its width and depth, each uniformly where there are several (seedable);
tied stages repeat their target; then the head stem is drawn uniformly where the supernet holds more
than one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace

from blocks.registry import DEFAULT_BACKBONE, stage_block
from search.space.schema import SpaceFile
from search.space.stages import StageSpace
from trainers.model.architecture import Architecture, StageChoice, canonical_head_stem
from trainers.model.layout import STAGE_LAYERS, stock_depth
from trainers.model.supernet_spec import HeadStem, StageCandidates, SupernetSpec

__all__ = ["block_candidates", "head_candidates", "sample_path", "supernet_spec", "width_pinned"]

Shape = tuple[float, int | None]
"""A stage's (width, depth); depth ``None``: the scale's stock depth."""


def block_candidates(st: StageSpace) -> tuple[StageChoice, ...]:
    """Every canonical block choice of an untied stage space (downsample, width and depth left out), in order."""
    out: dict[StageChoice, None] = {}
    for block in st.blocks:
        spec = stage_block(block)
        placements = [p for p in st.se_placements if p in spec.se_placements] or ["none"]
        for placement in placements:
            se: list[StageChoice] = [StageChoice(block=block)]
            if placement != "none":
                se = [StageChoice(block=block, se=placement, se_kind="fixed", se_reduction=r)
                      for r in st.reductions if "fixed" in st.se_kinds]
                se += [StageChoice(block=block, se=placement, se_kind="dynamic", se_min_ratio=lo, se_max_ratio=hi)
                       for lo, hi in st.ratio_bounds if "dynamic" in st.se_kinds]
            kernel_sets = st.kernels if spec.uses_kernels else ((3,),)
            for choice in se:
                for kernels in kernel_sets:
                    out[replace(choice, kernels=kernels).canonical(False, 1)] = None
    return tuple(out)


def head_candidates(space: SpaceFile) -> tuple[HeadStem, ...]:
    """Every canonical ``(head_stem, head_stem_layers)`` the space allows, in order (stock once)."""
    out: dict[HeadStem, None] = {}
    for stem in space.head_stems:
        for layers in space.head_stem_layers:
            out[canonical_head_stem(stem, layers)] = None
    return tuple(out)


def _shapes(space: SpaceFile, name: str, st: StageSpace, asked: Shape | None) -> tuple[list[float], list[int | None]]:
    """The widths and canonical depths (``None``: stock) paths take at stage ``name``: every one the space allows, or
    the one ``asked``; ``ValueError`` if the space does not allow it."""
    stock = stock_depth(space.scale, name)
    depths = list(dict.fromkeys(stock if d is None else d for d in st.depths))
    widths = [float(w) for w in dict.fromkeys(st.widths)]
    if asked is not None:
        width, depth = float(asked[0]), stock if asked[1] is None else asked[1]
        if width not in widths or depth not in depths:
            raise ValueError(f"stage {name}: the space allows widths {list(st.widths)} and depths {depths}, "
                             f"got width {width} and depth {depth}")
        widths, depths = [width], [depth]
    return widths, [None if d == stock else d for d in depths]


HEAD_INPUTS = ("p3_out", "p4_out", "p5_out")
"""The stages whose outputs the Detect head reads."""

STAGE_INPUTS: dict[str, tuple[str, ...]] = {"p4_neck": ("p4_backbone",), "p3_out": ("p4_neck", "p3_backbone"),
                                            "p4_out": ("p4_neck",)}
"""Stage -> the stages whose widths set its input width (YOLO26's concats; the others read fixed-width layers)."""

_REPBLOCK = "RepBlock: its first RepConv has an identity branch only where its input and output widths match"
_HEAD_STEM = "RepConv head stems: a stem's identity branch exists only where the head's input and hidden widths match"


def width_pinned(space: SpaceFile) -> dict[str, str]:
    """Untied stage -> why its width cannot be elastic (see the module docstring); stages not listed can be.

    A stage that may hold a RepBlock pins its own width and those of the stages feeding it (:data:`STAGE_INPUTS`);
    RepConv head stems pin the stages the head reads.
    """
    stages = dict(space.stages)
    ties = {name: st.tie or name for name, st in space.stages}
    out: dict[str, str] = {}
    for name in stages:
        if "RepBlock" in stages[ties[name]].blocks:
            for pinned in (name, *STAGE_INPUTS.get(name, ())):
                if pinned in ties:
                    out.setdefault(ties[pinned], _REPBLOCK)
    if space.head_stems != ("stock",):
        for name in HEAD_INPUTS:
            if name in ties:
                out.setdefault(ties[name], _HEAD_STEM)
    return out


def _stage_candidates(space: SpaceFile, name: str, st: StageSpace, asked: Shape | None) -> StageCandidates:
    """The candidates of untied stage ``name``, built at its largest width and depth."""
    widths, depths = _shapes(space, name, st, asked)
    if name in width_pinned(space) and len(widths) > 1:
        widths = [1.0 if 1.0 in widths else widths[0]]
    stock = stock_depth(space.scale, name)
    deepest = max(depths, key=lambda d: stock if d is None else d)
    return StageCandidates(block_candidates(st), st.downsamples, max(widths), deepest,
                           widths=tuple(widths), depths=tuple(depths))


def supernet_spec(space: SpaceFile, shape: Mapping[str, Shape] | None = None) -> SupernetSpec:
    """The supernet of ``space``: elastic over every width and depth the space allows, except the stages ``shape``
    pins to one (untied stage -> (width, depth); ``None`` depth: stock).

    Stages the space does not name hold the stock C3k2 and Conv only. ``ValueError`` for a space with a RepViT
    backbone (the supernet is built on YOLO26's own), and naming the
    stage for a shape outside the space's options or given for a stage that is tied or not in the space.
    """
    if space.backbones != (DEFAULT_BACKBONE,):
        raise ValueError(f"backbone: a supernet is built on backbone {DEFAULT_BACKBONE!r} only, got "
                         f"{list(space.backbones)}")
    spaces = dict(space.stages)
    shape = dict(shape or {})
    wrong = sorted(n for n in shape if n not in spaces or spaces[n].tie is not None)
    if wrong:
        raise ValueError(f"shape names stage {wrong[0]!r}: only untied stages of the space have a shape "
                         f"{[n for n, s in space.stages if s.tie is None]}")
    untied: dict[str, StageCandidates] = {}
    for name, st in space.stages:
        if st.tie is None:
            untied[name] = _stage_candidates(space, name, st, shape.get(name))
    stages = []
    for name, (_, ds) in STAGE_LAYERS.items():
        tie = spaces[name].tie if name in spaces else None
        own = untied.get(tie or name, StageCandidates())
        stages.append((name, replace(own, downsamples=own.downsamples if ds is not None else (), tie=tie)))
    return SupernetSpec(space.base, space.scale, tuple(stages), head_candidates(space))


def sample_path(spec: SupernetSpec, rng: random.Random | int) -> Architecture:
    """A path of the supernet: per untied stage a family, one of its candidates, a downsample, a width and a depth,
    each uniform (a width or depth only where there are several); then the head stem (only where there are several:
    a stock-head supernet draws what it drew before head stems).

    ``rng``: a ``random.Random`` (advanced) or an int seed (the same seed gives the same path).
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    picked: dict[str, StageChoice] = {}
    for name, s in spec.stages:
        if s.tie is not None:
            continue
        family = rng.choice(list(dict.fromkeys(c.block for c in s.blocks)))
        choice = rng.choice([c for c in s.blocks if c.block == family])
        group = [s] + [t for _, t in spec.stages if t.tie == name]
        downsamples = next((g.downsamples for g in group if g.downsamples), ())
        if downsamples:
            choice = replace(choice, downsample=rng.choice(downsamples))
        width = rng.choice(s.widths) if len(s.widths) > 1 else s.width
        depth = rng.choice(s.depths) if len(s.depths) > 1 else s.depth
        picked[name] = replace(choice, width=width, depth=depth)
    stages = {n: picked[s.tie or n] for n, s in spec.stages}
    stem, layers = spec.head_stems[0] if len(spec.head_stems) == 1 else rng.choice(spec.head_stems)
    return Architecture.create(stages, base=spec.base, scale=spec.scale, head_stem=stem, head_stem_layers=layers)
