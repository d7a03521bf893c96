"""A space's supernet: the candidates of each stage (:func:`supernet_spec`) and a uniform path sampler.

Width and depth are not elastic: the supernet is built at one (width, depth) per untied stage,
chosen from the space's options (default: the stock width 1.0 and stock depth where the space
allows them, else the first option); tied stages follow their target. A stage's block candidates
are every canonical choice the space allows with that shape: per block, its SE options (placement
x kind x reduction or ratio bounds, ``none`` once) times its kernel sets. For ``spaces/yolo26.yaml``:
C3k2 1 + OREPA 1 + RepViT 6 SE x 3 kernel sets + C3k2_RVB_SE 11 SE x 3 = 53 per stage, times 3
downsample candidates, a separate choice module, where the stage has a stride-2 conv. The space's
head stems (stock once, every other stem once per layer count) are the head's candidates.

:func:`sample_path` is the SPOS mutator: each untied stage draws its block family uniformly, then
one of that family's candidates uniformly (as the space's sampler draws the block first, then its
options; a family with 33 SE and kernel variants is not drawn 33 times as often as C3k2), and its
downsample candidate uniformly (seedable); tied stages repeat their target; then the head stem is
drawn uniformly where the supernet holds more than one.
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

__all__ = ["block_candidates", "head_candidates", "sample_path", "supernet_spec"]

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


def _shape(space: SpaceFile, name: str, st: StageSpace, asked: Shape | None) -> Shape:
    """The (width, canonical depth) stage ``name`` is built at; ``ValueError`` if the space does not allow it."""
    stock = stock_depth(space.scale, name)
    depths = [stock if d is None else d for d in st.depths]
    if asked is None:
        width = 1.0 if 1.0 in st.widths else st.widths[0]
        depth = stock if stock in depths else depths[0]
    else:
        width, depth = asked[0], stock if asked[1] is None else asked[1]
        if width not in st.widths or depth not in depths:
            raise ValueError(f"stage {name}: the space allows widths {list(st.widths)} and depths {depths}, "
                             f"got width {width} and depth {depth}")
    return float(width), None if depth == stock else depth


def supernet_spec(space: SpaceFile, shape: Mapping[str, Shape] | None = None) -> SupernetSpec:
    """The supernet of ``space`` at ``shape`` (untied stage -> (width, depth); ``None`` depth: stock).

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
            width, depth = _shape(space, name, st, shape.get(name))
            untied[name] = StageCandidates(block_candidates(st), st.downsamples, width, depth)
    stages = []
    for name, (_, ds) in STAGE_LAYERS.items():
        tie = spaces[name].tie if name in spaces else None
        own = untied.get(tie or name, StageCandidates())
        stages.append((name, replace(own, downsamples=own.downsamples if ds is not None else (), tie=tie)))
    return SupernetSpec(space.base, space.scale, tuple(stages), head_candidates(space))


def sample_path(spec: SupernetSpec, rng: random.Random | int) -> Architecture:
    """A path of the supernet: per untied stage a family, one of its candidates, a downsample, each uniform; then
    the head stem (only where there are several: a stock-head supernet draws what it drew before head stems).

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
        picked[name] = replace(choice, width=s.width, depth=s.depth)
    stages = {n: picked[s.tie or n] for n, s in spec.stages}
    stem, layers = spec.head_stems[0] if len(spec.head_stems) == 1 else rng.choice(spec.head_stems)
    return Architecture.create(stages, base=spec.base, scale=spec.scale, head_stem=stem, head_stem_layers=layers)
