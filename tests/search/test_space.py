"""Search spaces in-process: the shipped files validate, bad data raises ``SpaceError`` naming the field,
and sampling through Optuna is conditional (only applicable parameters, ties follow their target).
``size()`` and ``dimensions()``: ``test_space_size.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from blocks.registry import stage_block
from search.space import SearchSpace, SpaceError, load_space
from search.space.schema import parse_space
from trainers.model.architecture import Architecture
from trainers.model.layout import STAGE_LAYERS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "spaces").glob("*.yaml"))
DEFAULT = REPO / "spaces" / "yolo26.yaml"
WIDE = REPO / "spaces" / "yolo26_wide.yaml"  # the previous default, centred above stock

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------- shipped files


def test_spaces_are_shipped() -> None:
    assert DEFAULT in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_space_validates(path: Path) -> None:
    spec = load_space(path)
    assert spec.source == str(path)
    assert spec.base == "yolo26.yaml" and spec.scale in ("n", "s", "m", "l", "x")
    assert spec.stages and {n for n, _ in spec.stages} <= set(STAGE_LAYERS)
    space = SearchSpace(spec)
    assert space.size() >= 1 and space.dimensions() >= 0


def test_default_space_contents() -> None:
    spec = load_space(DEFAULT)
    stages = dict(spec.stages)
    assert list(stages) == list(STAGE_LAYERS)  # stage order is the model's, whatever the file's order
    # Centred below stock (issue 34 item 7): the costly options only where the feature map is small.
    widths = (0.5, 0.625, 0.75, 0.875, 1.0, 1.25)
    p2, p3, p4, p5 = (stages[s] for s in ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone"))
    for early in (p2, p3):
        assert early.blocks == ("C3k2", "C3k2_RVB_SE", "OREPA") and early.kernels == ((3,), (3, 5))
        assert early.se_placements == ("none", "after_concat") and early.depths == (1,)
    assert p2.widths == widths[:-1] and p3.widths == widths
    assert p4.blocks == ("C3k2", "C3k2_RVB_SE", "OREPA")
    assert p5.blocks == ("C3k2", "RepViT", "C3k2_RVB_SE", "OREPA")
    for deep in (p4, p5):
        assert deep.se_placements == ("none", "after_concat", "in_blocks")
        assert deep.kernels == ((3,), (3, 5), (3, 5, 7)) and deep.ratio_bounds == ((4, 8), (4, 16))
        assert deep.widths == widths and deep.depths == (1, 2)
    assert {n: s.tie for n, s in spec.stages if s.tie} == {
        "p4_neck": "p4_backbone", "p3_out": "p3_backbone", "p4_out": "p4_backbone", "p5_out": "p5_backbone"}
    assert spec.objectives == (("map50_95", "maximize"), ("latency_ms", "minimize"))
    assert [str(c) for c in spec.constraints] == ["params_m <= 4"]
    assert spec.constraints[0].violation(3.5) == pytest.approx(-0.5)
    assert spec.constraints[0].violation(4.25) == pytest.approx(0.25)
    assert (spec.latency.imgsz, spec.latency.device, spec.latency.dtype) == (640, "auto", "auto")
    assert (spec.train.data, spec.train.epochs, spec.train.imgsz, spec.train.batch) == (None, 12, 128, 8)
    # Every stage has a stride-2 conv (3 downsample choices). Blocks and options per stage:
    #   p2/p3: C3k2 3 + OREPA 3 + C3k2_RVB_SE 3 ds * 2 kernel sets * (1 off + after_concat * (3 reductions
    #          + 2 ratio pairs)) = 42; p4: C3k2 3 + OREPA 3 + C3k2_RVB_SE 3 * 3 * (1 + 2 placements * 5) = 105;
    #   p5: p4's 105 + RepViT 3 * 3 * (1 off + in_blocks * 5) = 159;
    #   times widths (5 at p2, 6 elsewhere) * depths (1 at p2/p3, 2 at p4/p5); the neck/out stages are tied.
    space = SearchSpace(spec)
    assert space.size() == (42 * 5) * (42 * 6) * (105 * 6 * 2) * (159 * 6 * 2)
    # Per stage: block, C3k2_RVB_SE.se, se_kind, se_reduction, se_ratios, kernels, downsample, width (8 at p2/p3),
    # + depth at p4, + RepViT.se at p5.
    assert space.dimensions() == 8 + 8 + 9 + 10


def test_wide_space_is_the_previous_default() -> None:
    spec = load_space(WIDE)
    stages = dict(spec.stages)
    for name in ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone"):
        st = stages[name]
        assert st.blocks == ("C3k2", "RepViT", "C3k2_RVB_SE", "OREPA", "RepBlock")
        assert st.kernels == ((3,), (3, 5), (3, 5, 7)) and st.ratio_bounds == ((4, 8), (4, 16))
        assert st.widths == (0.5, 0.75, 1.0, 1.25) and st.depths == (1, 2)
    assert spec.head_stems == ("stock", "repconv") and spec.head_stem_layers == (1, 2)
    assert spec.train == load_space(DEFAULT).train and spec.latency == load_space(DEFAULT).latency
    # Per backbone stage (all four have a stride-2 conv, 3 downsample choices):
    #   C3k2 3 + OREPA 3 + RepBlock 3 + RepViT 3 ds * 3 kernel sets * (1 off + in_blocks * (3 reductions + 2 ratio
    #   pairs)) + C3k2_RVB_SE 3 * 3 * (1 off + 2 placements * 5) = 3 + 3 + 3 + 54 + 99 = 162 blocks and options,
    #   times 4 widths * 2 depths; the neck/out stages are tied. Head stems: stock, repconv with 1 or 2 layers.
    space = SearchSpace(spec)
    assert space.size() == (162 * 4 * 2) ** 4 * 3
    # Per stage: block, RepViT.se, C3k2_RVB_SE.se, se_kind, se_reduction, se_ratios, kernels, downsample, width, depth;
    # then head_stem and head_stem_layers.
    assert space.dimensions() == 4 * 10 + 2


# ---------------------------------------------------------------------------------------------- bad data in-process


@pytest.mark.parametrize("data, field, match", [
    (None, "", "file is empty"),
    (["stages"], "", "must be a mapping, got list"),
    ({"scale": "n"}, "stages", "missing required key"),
    ({"stages": {"p3_backbone": {"block": "RepVGG"}}}, "stages.p3_backbone.block[0]",
     r"must be one of \['C3k2', 'RepViT', 'C3k2_RVB_SE', 'OREPA', 'RepBlock'\], got 'RepVGG'"),
    ({"stages": {"p3_backbone": {"block": "RepViT", "kernels": [[3, 6]]}}}, "stages.p3_backbone.kernels[0][1]",
     r"must be one of \[3, 5, 7, 9, 11\], got 6"),
    ({"stages": {"p4_backbone": {"block": "RepViT", "se": {"placement": "in_blocks", "reduction": 0}}}},
     "stages.p4_backbone.se.reduction[0]", r"must be an integer in \[1, 64\], got 0"),
    ({"stages": {"p4_backbone": {"se": {"kind": "dynamic", "min_ratio": [8, 16], "max_ratio": 8}}}},
     "stages.p4_backbone.se.min_ratio", r"must be < max_ratio for at least one pair, got min_ratio \[8, 16\]"),
    ({"stages": {"p3_backbone": {"blocks": "RepViT"}}}, "stages.p3_backbone.blocks",
     r"unknown key, allowed: \[.*\] \(did you mean 'block'\?\)"),
    ({"stages": {"p4_neck": {"tie": "p4_backbone"}}}, "stages.p4_neck.tie",
     r"must name an untied stage of this file \[\], got 'p4_backbone'"),
    ({"stages": {"p3_backbone": {}}, "train": {"epochs": 0}}, "train.epochs", r"must be an integer in \[1, 10000\]"),
    ({"stages": {"p3_backbone": {}}, "constraints": ["gflops == 5"]}, "constraints[0]",
     "must read 'metric <= number' or 'metric >= number'"),
    ({"stages": {"p3_backbone": {}}, "latency": {"imgsz": 650}}, "latency.imgsz", "must be a multiple of 32"),
], ids=["empty", "list", "no-stages", "unknown-block", "even-kernel", "reduction-0", "min>max-dynamic",
        "did-you-mean", "tie-to-absent", "epochs-0", "constraint-op", "latency-imgsz"])
def test_parse_space_rejects(data: Any, field: str, match: str) -> None:
    with pytest.raises(SpaceError, match=match) as info:
        parse_space(data, "bad.yaml")
    assert info.value.field == field and info.value.source == "bad.yaml"
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"bad.yaml: {field}: " if field else "bad.yaml: ")


def test_min_ratio_above_max_ratio_is_fine_when_no_stage_is_dynamic() -> None:
    spec = parse_space({"stages": {"p4_backbone": {"block": "RepViT", "se": {
        "placement": "in_blocks", "kind": "fixed", "min_ratio": 16, "max_ratio": 8}}}})
    assert dict(spec.stages)["p4_backbone"].se_kinds == ("fixed",)


def test_scalars_are_one_element_choice_lists() -> None:
    st = dict(parse_space({"stages": {"p3_backbone": {"block": "RepViT", "kernels": 5, "downsample": "OREPA"}}})
              .stages)["p3_backbone"]
    assert st.blocks == ("RepViT",) and st.kernels == ((5,),) and st.downsamples == ("OREPA",)


def test_load_space_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="file not found") as info:
        load_space(tmp_path / "nope.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  p3_backbone: {kernels: [[2]], block: RepViT}\n")
    with pytest.raises(SpaceError, match=r"bad\.yaml: stages\.p3_backbone\.kernels\[0\]\[0\]: must be one of"):
        load_space(bad)


# ---------------------------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def default_samples() -> list[tuple[Architecture, dict[str, Any]]]:
    """50 (architecture, trial.params) pairs from the default space, Optuna's RandomSampler seeded."""
    space = SearchSpace.load(DEFAULT)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    out = []
    for _ in range(50):
        trial = study.ask()
        out.append((space.suggest(trial), dict(trial.params)))
    return out


def test_samples_are_varied_and_seeded(default_samples: list[tuple[Architecture, dict[str, Any]]]) -> None:
    assert len({a.hash for a, _ in default_samples}) >= 45
    blocks = {s.block for a, _ in default_samples for _, s in a.stages}
    assert blocks == {"C3k2", "RepViT", "C3k2_RVB_SE", "OREPA"}
    space = SearchSpace.load(DEFAULT)
    again = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    assert [space.suggest(again.ask()) for _ in range(5)] == [a for a, _ in default_samples[:5]]


def test_c3k2_and_orepa_stages_get_no_se_or_kernel_params(
        default_samples: list[tuple[Architecture, dict[str, Any]]]) -> None:
    seen = 0
    for arch, params in default_samples:
        for name, choice in arch.stages:
            if choice.block in ("C3k2", "OREPA"):
                seen += 1
                assert choice.se == "none" and choice.kernels == (3,)
                own = [k for k in params if k.startswith(name + ".")]
                assert not [k for k in own if "se" in k.split(".")[-1] or k.endswith(".kernels")], (name, own)
                assert "se" not in choice.to_dict() and "kernels" not in choice.to_dict()
    assert seen > 50


def test_tied_stages_equal_their_target(default_samples: list[tuple[Architecture, dict[str, Any]]]) -> None:
    ties = {n: s.tie for n, s in load_space(DEFAULT).stages if s.tie}
    for arch, params in default_samples:
        for stage, target in ties.items():
            mine, theirs = arch.stage(stage), arch.stage(target)
            assert mine.block == theirs.block and mine.kernels == theirs.kernels and mine.se == theirs.se
            assert (mine.se_kind, mine.se_reduction, mine.se_min_ratio, mine.se_max_ratio) == (
                theirs.se_kind, theirs.se_reduction, theirs.se_min_ratio, theirs.se_max_ratio)
            assert (mine.width, mine.depth) == (theirs.width, theirs.depth)
            if STAGE_LAYERS[stage][1] is None:  # p4_neck / p3_out have no stride-2 conv of their own
                assert mine.downsample is None
            else:
                assert mine.downsample == theirs.downsample
            assert not [k for k in params if k.startswith(stage + ".")]


def test_trial_params_are_only_the_applicable_ones(default_samples: list[tuple[Architecture, dict[str, Any]]]) -> None:
    space = SearchSpace.load(DEFAULT)
    for arch, params in default_samples:
        expected = set()
        for name, st in space.spec.stages:
            if st.tie is not None:
                continue
            c = arch.stage(name)
            spec = stage_block(c.block)
            expected |= {f"{name}.block", f"{name}.downsample", f"{name}.width"}
            if len(st.depths) > 1:  # a single choice is never asked (p2/p3_backbone keep their stock depth)
                expected.add(f"{name}.depth")
            if len([p for p in st.se_placements if p in spec.se_placements]) > 1:
                expected.add(f"{name}.{c.block}.se")
            if c.se != "none":
                expected |= {f"{name}.se_kind", f"{name}.se_reduction" if c.se_kind == "fixed" else f"{name}.se_ratios"}
            if spec.uses_kernels:
                expected.add(f"{name}.kernels")
        assert set(params) == expected
        # The params alone give the architecture back (what a study's best trial is rebuilt from).
        replay = optuna.trial.FixedTrial(params)
        assert space.suggest(replay) == arch


def test_baseline_params_enqueued_give_the_baseline() -> None:
    space = SearchSpace.load(DEFAULT)
    params = space.baseline_params()
    assert params == {**{f"{s}.{k}": v for s in ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone")
                         for k, v in (("block", "C3k2"), ("downsample", "Conv"), ("width", 1.0))},
                      "p4_backbone.depth": 1, "p5_backbone.depth": 1}  # p2/p3_backbone have one depth: not asked
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    trial = study.ask()
    arch = space.suggest(trial)
    assert arch == space.baseline() == Architecture.baseline() and arch.is_baseline
    assert trial.params == params


def test_head_stem_is_sampled_where_listed_and_replays() -> None:
    """The wide space asks ``head_stem``, and ``head_stem_layers`` for the RepConv stem only; params replay the arch."""
    space = SearchSpace.load(WIDE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        arch = space.suggest(trial)
        seen.add((arch.head_stem, arch.head_stem_layers))
        heads = {k: v for k, v in trial.params.items() if k.startswith("head_stem")}
        if arch.head_stem == "stock":
            assert heads == {"head_stem": "stock"} and "head_stem" not in arch.to_dict()
        else:
            assert heads == {"head_stem": "repconv", "head_stem_layers": arch.head_stem_layers}
            assert arch.to_dict()["head_stem_layers"] == arch.head_stem_layers
        assert space.suggest(optuna.trial.FixedTrial(trial.params)) == arch
    assert seen == {("stock", 2), ("repconv", 1), ("repconv", 2)}
    assert space.baseline_params()["head_stem"] == "stock"
    assert SearchSpace.load(DEFAULT).spec.head_stems == ("stock",)  # the default space does not list it
