"""Stage ``width`` and ``depth`` in a search space: validated field by field, sampled as ``<stage>.width`` and
``<stage>.depth`` (a single choice is not a dimension), tied like every other choice, counted by ``size()``
and ``dimensions()``, and their stock values leave the stock architecture and its hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from search_helpers import every_path, space_of

from search.space import SearchSpace, SpaceError
from search.space.schema import parse_space
from trainers.model.architecture import Architecture, StageChoice

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHAPED = """
stages:
  p3_backbone: {block: [C3k2, RepViT], width: [0.5, 1.0, 1.25], depth: [1, 2], downsample: [Conv, RepConv]}
  p4_backbone: {width: 0.75}
  p3_out: {tie: p3_backbone}
"""


def stage(text: str, name: str = "p3_backbone") -> Any:
    return dict(space_of(text).spec.stages)[name]


# ---------------------------------------------------------------------------------------------- schema


def test_width_and_depth_are_parsed() -> None:
    st = stage(SHAPED)
    assert st.widths == (0.5, 1.0, 1.25) and st.depths == (1, 2)
    fixed = stage(SHAPED, "p4_backbone")
    assert fixed.widths == (0.75,) and fixed.depths == (None,)  # no depth key: the scale's stock depth
    ints = stage("stages:\n  p3_backbone: {width: [1, 2], depth: 3}\n")
    assert ints.widths == (1.0, 2.0) and all(type(w) is float for w in ints.widths) and ints.depths == (3,)
    default = stage("stages:\n  p3_backbone: {block: RepViT}\n")
    assert default.widths == (1.0,) and default.depths == (None,)


@pytest.mark.parametrize("spec, field, message", [
    ({"width": 0.3}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got 0.3"),
    ({"width": [0.5, 0.125]}, "width[1]", "must be a multiple of 0.125 in [0.25, 2.0], got 0.125"),
    ({"width": 2.5}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got 2.5"),
    ({"width": "1.0"}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got '1.0'"),
    ({"width": True}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got True"),
    ({"width": float("nan")}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got nan"),
    ({"width": float("inf")}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got inf"),
    ({"width": [[0.5]]}, "width[0]", "must be a multiple of 0.125 in [0.25, 2.0], got [0.5]"),
    ({"width": [1, 1.0]}, "width", "choices must be unique, got [1, 1.0]"),
    ({"width": []}, "width", "must list at least one choice, got []"),
    ({"depth": 0}, "depth[0]", "must be an integer in [1, 8], got 0"),
    ({"depth": [1, 9]}, "depth[1]", "must be an integer in [1, 8], got 9"),
    ({"depth": 1.5}, "depth[0]", "must be an integer in [1, 8], got 1.5"),
    ({"depth": 2.0}, "depth[0]", "must be an integer in [1, 8], got 2.0"),
    ({"depth": "2"}, "depth[0]", "must be an integer in [1, 8], got '2'"),
    ({"depth": None}, "depth[0]", "must be an integer in [1, 8], got None"),
    ({"depth": [2, 2]}, "depth", "choices must be unique, got [2, 2]"),
    ({"widht": 0.5}, "widht", "unknown key, allowed: ['block', 'se', 'kernels', 'downsample', 'width', 'depth', "
                              "'tie'] (did you mean 'width'?)"),
], ids=["step", "below", "above", "string", "bool", "nan", "inf", "nested", "repeated-1", "empty", "depth-0",
        "depth-9", "depth-float", "depth-2.0", "depth-string", "depth-null", "depth-repeated", "misspelt"])
def test_bad_widths_and_depths_are_one_line_naming_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space({"stages": {"p4_backbone": {"block": "C3k2", **spec}}}, "bad.yaml")
    assert info.value.field == f"stages.p4_backbone.{field}"
    assert str(info.value) == f"bad.yaml: stages.p4_backbone.{field}: {message}"
    assert "\n" not in str(info.value)


def test_a_width_too_large_for_a_float_is_refused_in_one_line() -> None:
    with pytest.raises(SpaceError) as info:
        parse_space({"stages": {"p4_backbone": {"width": 10**400}}}, "bad.yaml")  # float(10**400) overflows
    assert info.value.field == "stages.p4_backbone.width[0]"
    assert str(info.value).startswith("bad.yaml: stages.p4_backbone.width[0]: must be a multiple of 0.125 in "
                                      "[0.25, 2.0], got 1000")
    assert len(str(info.value)) < 200


def test_a_tied_stage_takes_no_width_or_depth() -> None:
    with pytest.raises(SpaceError, match=r"a tied stage takes no other keys, got \['tie', 'width'\]") as info:
        parse_space({"stages": {"p4_backbone": {}, "p4_out": {"tie": "p4_backbone", "width": 0.5}}}, "bad.yaml")
    assert info.value.field == "stages.p4_out"


# ---------------------------------------------------------------------------------------------- sampling


def test_width_and_depth_are_asked_for_every_block_and_tied_stages_follow() -> None:
    space = space_of(SHAPED)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen: set[tuple[str, float, int | None]] = set()
    for _ in range(40):
        trial = study.ask()
        arch = space.suggest(trial)
        mine, tied = arch.stage("p3_backbone"), arch.stage("p3_out")
        assert {"p3_backbone.width", "p3_backbone.depth"} <= set(trial.params)
        assert not [k for k in trial.params if k.startswith(("p4_backbone.", "p3_out."))]  # one choice: no param
        assert mine.width == trial.params["p3_backbone.width"] == tied.width
        assert (mine.depth or 1) == trial.params["p3_backbone.depth"] and tied.depth == mine.depth
        assert arch.stage("p4_backbone").width == 0.75 and arch.stage("p4_backbone").depth is None
        seen.add((mine.block, mine.width, mine.depth))
    assert {b for b, _, _ in seen} == {"C3k2", "RepViT"} and {w for _, w, _ in seen} == {0.5, 1.0, 1.25}
    assert {d for _, _, d in seen} == {None, 2}  # depth 1 is yolo26n's stock: canonical None
    widths = {str(t.distributions["p3_backbone.width"]) for t in study.trials}
    assert len(widths) == 1, "a parameter name must keep one distribution"


def test_stock_width_and_depth_give_the_stock_hash() -> None:
    space = space_of(SHAPED)
    params = space.baseline_params()
    assert params == {"p3_backbone.block": "C3k2", "p3_backbone.downsample": "Conv", "p3_backbone.width": 1.0,
                      "p3_backbone.depth": 1}
    arch = space.suggest(optuna.trial.FixedTrial(params))
    assert arch == Architecture.create({"p4_backbone": StageChoice(width=0.75)})
    plain = space.suggest(optuna.trial.FixedTrial({**params, "p3_backbone.block": "RepViT"}))
    assert plain.hash == Architecture.create({"p3_backbone": StageChoice(block="RepViT"), "p3_out": StageChoice(
        block="RepViT"), "p4_backbone": StageChoice(width=0.75)}).hash


def test_baseline_params_use_the_scale_s_stock_depth() -> None:
    space = space_of("scale: l\nstages:\n  p4_backbone: {width: [0.5, 1.0], depth: [1, 2]}\n")
    params = space.baseline_params()
    assert params == {"p4_backbone.width": 1.0, "p4_backbone.depth": 2}
    arch = space.suggest(optuna.trial.FixedTrial(params))
    assert arch == Architecture.baseline(scale="l") and arch.is_baseline


@pytest.mark.parametrize("text, size, dimensions", [
    (SHAPED, (2 + 2) * 3 * 2, 4),  # (C3k2 + RepViT) x 2 downsamples, x 3 widths x 2 depths
    ("stages:\n  p4_neck: {width: [0.5, 0.75], depth: [1, 2, 3]}\n", 6, 2),
    ("stages:\n  p4_neck: {width: 0.5, depth: 2}\n", 1, 0),
], ids=["shaped", "widths-and-depths", "single-choices"])
def test_size_and_dimensions_count_widths_and_depths(text: str, size: int, dimensions: int) -> None:
    space = space_of(text)
    paths = every_path(space)
    assert len({a.hash for a, _ in paths}) == len(paths) == space.size() == size
    assert space.dimensions() == len({k for _, p in paths for k in p}) == dimensions


def test_shipped_space_reaches_every_width_and_depth() -> None:
    space = SearchSpace.load(Path(__file__).resolve().parents[2] / "spaces" / "yolo26.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    choices = [c for _ in range(30) for _, c in space.suggest(study.ask()).stages]
    assert {c.width for c in choices} == {0.5, 0.625, 0.75, 0.875, 1.0, 1.25}
    assert {c.depth for c in choices} == {None, 2}
