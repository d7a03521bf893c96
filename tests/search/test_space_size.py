"""``SearchSpace.size()`` and ``dimensions()`` against a brute-force walk of every path through
``SearchSpace.suggest`` (a scripted trial that tries every choice of every call it receives).
"""

from __future__ import annotations

import pytest
from search_helpers import every_path, space_of

# Computed by hand below (test_tiny_space_size_and_dimensions_by_hand).
TINY = """
stages:
  p3_backbone:
    block: [C3k2, RepViT, C3k2_RVB_SE, OREPA]
    se: {placement: [none, after_concat, in_blocks], kind: [fixed, dynamic], reduction: [4, 8],
         min_ratio: [4], max_ratio: [8, 16]}
    kernels: [[3], [3, 5]]
    downsample: [Conv, RepConv]
  p4_neck:
    block: [C3k2, OREPA]
  p3_out: {tie: p3_backbone}
"""


def test_tiny_space_size_and_dimensions_by_hand() -> None:
    space = space_of(TINY)
    # p3_backbone (downsample: 2 choices):
    #   C3k2 2 + OREPA 2
    #   RepViT      2 ds * 2 kernel sets * (1 off + in_blocks * (2 reductions + 2 ratio pairs))     = 20
    #   C3k2_RVB_SE 2 ds * 2 kernel sets * (1 off + 2 placements * (2 reductions + 2 ratio pairs)) = 36
    # p4_neck: C3k2 or OREPA (no stride-2 conv before it) = 2; p3_out is tied to p3_backbone.
    assert space.size() == (2 + 2 + 20 + 36) * 2 == 120
    # p3_backbone.{block, RepViT.se, C3k2_RVB_SE.se, se_kind, se_reduction, se_ratios, kernels, downsample}
    # and p4_neck.block.
    assert space.dimensions() == 9


@pytest.mark.parametrize("text", [
    TINY,
    """
    stages:
      p4_neck: {block: [RepViT, C3k2_RVB_SE], se: {placement: [after_concat, in_blocks], reduction: [4, 16]},
                kernels: [[3], [5], [3, 7]], downsample: [Conv, RepConv, OREPA]}
      p4_out: {tie: p4_neck}
    """,
    """
    stages:
      p5_backbone: {block: [RepViT, OREPA], se: {placement: [in_blocks], kind: dynamic, min_ratio: [2, 4],
                                                 max_ratio: [4, 8]}}
      p2_backbone: {block: C3k2_RVB_SE, kernels: [[3], [3, 5, 7, 9, 11]]}
    """,
    """
    head_stem: [stock, repconv]
    head_stem_layers: [1, 2]
    stages:
      p3_backbone: {block: [C3k2, RepBlock], downsample: [Conv, RepConv], depth: [1, 2]}
      p3_out: {tie: p3_backbone}
    """,
    """
    head_stem: repconv
    head_stem_layers: [2, 1]
    stages:
      p4_neck: {block: [RepBlock, OREPA]}
    """,
    """
    head_stem: [repconv, stock]
    head_stem_layers: 1
    stages:
      p4_neck: {block: RepBlock}
    """,
], ids=["tiny", "neck-tied-to-out", "dynamic-only", "repblock-head-stems", "repconv-head-only", "one-layer-count"])
def test_size_and_dimensions_match_a_walk_of_every_choice(text: str) -> None:
    space = space_of(text)
    paths = every_path(space)
    hashes = {a.hash for a, _ in paths}
    assert len(hashes) == len(paths), "two different choice paths gave the same architecture"
    assert space.size() == len(paths)
    assert space.dimensions() == len({k for _, p in paths for k in p})


@pytest.mark.parametrize("stage, expected", [
    ("{block: [C3k2, OREPA], se: {placement: [none, in_blocks], kind: [fixed, dynamic], reduction: [4, 8]},"
     " kernels: [[3], [3, 5]]}", {"p3_backbone.block"}),
    ("{block: RepViT, se: {placement: [none, after_concat], kind: [fixed, dynamic], reduction: [4, 8]}}", set()),
    ("{block: RepViT, se: {placement: in_blocks, kind: fixed, max_ratio: [8, 16]}}", set()),
    ("{block: RepViT, se: {placement: in_blocks, kind: dynamic, reduction: [4, 8]}}", set()),
    ("{block: [RepBlock, C3k2], se: {placement: [none, in_blocks]}, kernels: [[3], [5]]}\nhead_stem: stock\n"
     "head_stem_layers: [1, 2]", {"p3_backbone.block"}),
], ids=["no-block-takes-se-or-kernels", "placement-not-for-this-block", "ratios-but-fixed", "reductions-but-dynamic",
        "repblock-and-stock-head"])
def test_dimensions_count_only_parameters_that_can_be_suggested(stage: str, expected: set[str]) -> None:
    """``dimensions()`` is the number of distinct parameter names ``suggest`` can ask for.

    Options no picked block can use are not dimensions: ``kernels`` when no listed block takes
    kernels, SE options when no listed block takes a listed placement, ``se_reduction``
    (``se_ratios``) when no listed SE kind is ``fixed`` (``dynamic``). (``dimensions`` once counted them.)
    """
    space = space_of(f"stages:\n  p3_backbone: {stage}\n")
    paths = every_path(space)
    names = {k for _, p in paths for k in p}
    assert names == expected
    assert space.size() == len(paths)
    assert space.dimensions() == len(names)
