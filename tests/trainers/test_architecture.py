"""``Architecture``: canonical choices, JSON round trip, a stable 12-hex hash (also across processes); stage
widths and depths, whose stock values leave the hashes of architectures recorded before they existed."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from trainers.model.architecture import Architecture, StageChoice
from trainers.model.layout import STAGE_LAYERS

REPO = Path(__file__).resolve().parents[2]

REP = Architecture.create({
    "p2_backbone": StageChoice(block="OREPA", downsample="OREPA"),
    "p3_backbone": StageChoice(block="RepViT", se="in_blocks", se_kind="dynamic", se_min_ratio=4, se_max_ratio=8,
                               kernels=(3, 5, 7), downsample="RepConv"),
    "p4_backbone": StageChoice(block="C3k2_RVB_SE", se="after_concat", se_reduction=8, kernels=(3, 5)),
    "p4_out": StageChoice(block="RepViT", kernels=(3,), downsample="OREPA"),
}, scale="s")


def test_baseline_is_every_stage_stock_c3k2_with_a_plain_conv() -> None:
    base = Architecture.baseline()
    assert base.is_baseline and not REP.is_baseline
    assert [n for n, _ in base.stages] == list(STAGE_LAYERS)
    for name, choice in base.stages:
        assert choice.block == "C3k2" and choice.se == "none"
        assert choice.downsample == ("Conv" if STAGE_LAYERS[name][1] is not None else None)
    assert base.blocks_summary() == "/".join(["C3k2"] * len(STAGE_LAYERS))


def test_blocks_summary_shows_widths_and_depths_that_are_not_stock() -> None:
    arch = Architecture.create({"p3_backbone": StageChoice(block="RepViT", width=0.75, depth=2),
                                "p4_backbone": StageChoice(width=1.25),
                                "p5_backbone": StageChoice(block="OREPA", depth=1)})  # yolo26n's own depth: stock
    assert arch.blocks_summary() == "C3k2/RepViT x0.75 d2/C3k2 x1.25/OREPA/C3k2/C3k2/C3k2/C3k2"
    assert arch.stage("p3_backbone").label() == "RepViT x0.75 d2" and StageChoice().label() == "C3k2"
    deeper = Architecture.create({"p3_backbone": StageChoice(block="RepViT", width=0.625, depth=3)}, scale="s")
    assert deeper.blocks_summary().split("/")[1] == "RepViT x0.625 d3"


@pytest.mark.parametrize("arch", [Architecture.baseline(), REP], ids=["baseline", "rep"])
def test_json_round_trip(arch: Architecture) -> None:
    line = arch.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["hash"] == arch.hash and data["scale"] == arch.scale and data["base"] == "yolo26.yaml"
    assert set(data["stages"]) == set(STAGE_LAYERS)
    assert Architecture.from_json(line) == arch
    assert Architecture.from_dict(arch.to_dict()) == arch  # without the hash key too
    assert Architecture.from_dict(json.loads(json.dumps(arch.to_dict()))).hash == arch.hash


def test_to_dict_holds_only_the_applicable_choices() -> None:
    stages = REP.to_dict()["stages"]
    assert stages["p2_backbone"] == {"block": "OREPA", "downsample": "OREPA"}
    assert stages["p3_backbone"] == {"block": "RepViT", "kernels": [3, 5, 7], "downsample": "RepConv",
                                     "se": {"placement": "in_blocks", "kind": "dynamic", "min_ratio": 4,
                                            "max_ratio": 8}}
    assert stages["p4_backbone"] == {"block": "C3k2_RVB_SE", "kernels": [3, 5], "downsample": "Conv",
                                     "se": {"placement": "after_concat", "kind": "fixed", "reduction": 8}}
    assert stages["p4_neck"] == {"block": "C3k2"}  # no stride-2 conv before it: no downsample key
    assert stages["p4_out"] == {"block": "RepViT", "kernels": [3], "downsample": "OREPA"}


def test_hash_is_12_hex_digits_and_stable() -> None:
    h = REP.hash
    assert re.fullmatch(r"[0-9a-f]{12}", h)
    assert h == REP.hash == Architecture.from_json(REP.to_json()).hash
    rebuilt = Architecture.create(dict(REP.stages), scale="s")
    assert rebuilt == REP and hash(rebuilt) == hash(REP) and rebuilt.hash == h
    assert len({Architecture.baseline().hash, Architecture.baseline(scale="s").hash, REP.hash}) == 3


@pytest.mark.parametrize("stage, choice", [
    ("p4_backbone", StageChoice(block="C3k2", se="in_blocks", se_kind="dynamic", se_reduction=16, kernels=(3, 5))),
    ("p4_backbone", StageChoice(block="C3k2", se="after_concat", se_min_ratio=2, se_max_ratio=32)),
    ("p5_backbone", StageChoice(block="C3k2", kernels=(3, 5, 7, 9))),
    ("p4_neck", StageChoice(block="C3k2", downsample="RepConv")),  # p4_neck has no stride-2 conv
    ("p3_out", StageChoice(block="C3k2", downsample=None)),
    ("p3_backbone", StageChoice(block="C3k2", downsample=None)),  # a missing downsample is the plain Conv
], ids=["se-on-C3k2", "ratios-on-C3k2", "kernels-on-C3k2", "downsample-on-neck", "none-on-out", "none-is-Conv"])
def test_choices_that_do_not_apply_leave_the_baseline_hash(stage: str, choice: StageChoice) -> None:
    arch = Architecture.create({stage: choice})
    assert arch == Architecture.baseline() and arch.hash == Architecture.baseline().hash
    assert arch.is_baseline


@pytest.mark.parametrize("variant", [
    StageChoice(block="OREPA", kernels=(3, 5, 7), se="in_blocks", se_reduction=16),  # OREPA: no SE, no kernels
    StageChoice(block="RepViT", se="none", se_kind="dynamic", se_reduction=16, se_min_ratio=2, kernels=(3, 5)),
    StageChoice(block="RepViT", se="after_concat", se_reduction=8, kernels=(3, 5)),  # RepViT takes SE in blocks only
    StageChoice(block="C3k2_RVB_SE", se="in_blocks", se_kind="fixed", se_reduction=8, se_min_ratio=2,
                se_max_ratio=32, kernels=(3, 5)),  # fixed SE: the ratios do not apply
    StageChoice(block="C3k2_RVB_SE", se="in_blocks", se_kind="dynamic", se_reduction=16, se_min_ratio=4,
                se_max_ratio=16, kernels=(3, 5)),  # dynamic SE: the reduction does not apply
], ids=["OREPA", "RepViT-se-off", "RepViT-after-concat", "fixed-SE", "dynamic-SE"])
def test_inapplicable_options_of_rep_blocks_do_not_change_the_hash(variant: StageChoice) -> None:
    plain = {
        "OREPA": StageChoice(block="OREPA"),
        "RepViT": StageChoice(block="RepViT", kernels=(3, 5)),
    }.get(variant.block)
    if variant.block == "C3k2_RVB_SE":
        plain = StageChoice(block="C3k2_RVB_SE", se="in_blocks", se_kind=variant.se_kind, kernels=(3, 5),
                            se_reduction=8 if variant.se_kind == "fixed" else 4)
    assert plain is not None
    a, b = Architecture.create({"p3_backbone": variant}), Architecture.create({"p3_backbone": plain})
    assert a == b and a.hash == b.hash


@pytest.mark.parametrize("change", [
    {"kernels": (3, 5, 7)}, {"se_reduction": 16}, {"se": "in_blocks"}, {"downsample": "RepConv"}, {"block": "RepViT"},
])
def test_every_applicable_choice_changes_the_hash(change: dict[str, object]) -> None:
    base = StageChoice(block="C3k2_RVB_SE", se="after_concat", se_reduction=8, kernels=(3, 5))
    changed = StageChoice(**{**base.__dict__, **change})  # type: ignore[arg-type]
    a, b = Architecture.create({"p4_backbone": base}), Architecture.create({"p4_backbone": changed})
    assert a != b and a.hash != b.hash


def test_hash_is_the_same_in_another_process() -> None:
    code = ("import sys, json; from trainers.model.architecture import Architecture; "
            "print(Architecture.from_dict(json.loads(sys.argv[1])).hash)")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(REP.to_dict())], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=60, check=True)
    assert out.stdout.strip() == REP.hash


def test_from_dict_with_a_wrong_hash_raises() -> None:
    data = json.loads(REP.to_json())
    data["hash"] = "0123456789ab"
    expected = f"hash does not match the choices: file says '0123456789ab', got '{REP.hash}'"
    with pytest.raises(ValueError, match=expected):
        Architecture.from_dict(data)
    edited = json.loads(REP.to_json())
    edited["stages"]["p3_backbone"]["kernels"] = [3, 5]  # a hand edit that forgot the hash
    with pytest.raises(ValueError, match="hash does not match"):
        Architecture.from_json(json.dumps(edited))


def test_from_dict_reads_a_sample_line_and_ignores_its_measurements() -> None:
    line = {**json.loads(REP.to_json()), "params": 123, "gflops": 4.5}
    assert Architecture.from_dict(line) == REP


@pytest.mark.parametrize("kwargs, match", [
    ({"stages": {"p6_backbone": StageChoice()}}, r"stage must be one of \[.*'p2_backbone'.*\], got 'p6_backbone'"),
    ({"scale": "xl"}, r"scale must be one of \['n', 's', 'm', 'l', 'x'\], got 'xl'"),
    ({"stages": {"p3_backbone": StageChoice(block="RepVGG")}}, r"block must be one of \[.*\], got 'RepVGG'"),
])
def test_create_rejects_unknown_names(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Architecture.create(**kwargs)  # type: ignore[arg-type]


def test_architecture_is_frozen_and_hashable() -> None:
    with pytest.raises(FrozenInstanceError):
        REP.scale = "n"  # type: ignore[misc]
    assert len({REP, Architecture.from_json(REP.to_json()), Architecture.baseline()}) == 2
    assert REP.stage("p3_backbone").kernels == (3, 5, 7)


# ---------------------------------------------------------------------------------------------- width and depth

LEGACY_DB = REPO / "tests" / "search" / "data" / "legacy_study.db"


def test_width_and_depth_are_recorded_and_round_trip() -> None:
    arch = Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=(3,), width=0.75, depth=2),
                                "p5_out": StageChoice(width=1.25)})
    stages = arch.to_dict()["stages"]
    assert stages["p3_backbone"] == {"block": "RepViT", "kernels": [3], "downsample": "Conv", "width": 0.75,
                                     "depth": 2}
    assert stages["p5_out"] == {"block": "C3k2", "downsample": "Conv", "width": 1.25}
    assert Architecture.from_json(arch.to_json()) == arch and not arch.is_baseline
    assert arch.stage("p3_backbone").depth == 2 and arch.stage("p4_neck").width == 1.0


@pytest.mark.parametrize("scale, choice", [
    ("n", StageChoice(width=1.0, depth=1)), ("n", StageChoice(width=1, depth=None)), ("s", StageChoice(depth=1)),
    ("l", StageChoice(depth=2)),  # yolo26l's stages have two blocks
], ids=["n-1.0-1", "n-int-width", "s-depth-1", "l-depth-2"])
def test_stock_width_and_depth_leave_the_hash(scale: str, choice: StageChoice) -> None:
    arch = Architecture.create({"p4_backbone": choice}, scale=scale)
    assert arch == Architecture.baseline(scale=scale) and arch.hash == Architecture.baseline(scale=scale).hash
    assert arch.stage("p4_backbone").depth is None and type(arch.stage("p4_backbone").width) is float
    assert "width" not in arch.to_dict()["stages"]["p4_backbone"]


def test_the_stock_depth_depends_on_the_scale() -> None:
    two = {"p4_backbone": StageChoice(depth=2)}
    assert Architecture.create(two, scale="n").stage("p4_backbone").depth == 2
    assert Architecture.create(two, scale="l").stage("p4_backbone").depth is None
    assert Architecture.create({"p5_out": StageChoice(depth=2)}, scale="l").stage("p5_out").depth == 2  # stock 1


@pytest.mark.parametrize("change", [{"width": 0.75}, {"width": 1.25}, {"depth": 2}, {"depth": 3}])
def test_width_and_depth_change_the_hash(change: dict[str, object]) -> None:
    base = StageChoice(block="C3k2_RVB_SE", se="after_concat", se_reduction=8, kernels=(3, 5))
    changed = StageChoice(**{**base.__dict__, **change})  # type: ignore[arg-type]
    a, b = Architecture.create({"p4_backbone": base}), Architecture.create({"p4_backbone": changed})
    assert a != b and a.hash != b.hash


def test_hashes_recorded_before_widths_and_depths_rebuild_equal() -> None:
    """The trials of a study written before stage widths and depths existed keep their architecture hash."""
    with sqlite3.connect(f"file:{LEGACY_DB}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT trial_id, key, value_json FROM trial_user_attributes "
                          "WHERE key IN ('architecture', 'hash')").fetchall()
    recorded: dict[int, dict[str, object]] = {}
    for trial, key, value in rows:
        recorded.setdefault(trial, {})[key] = json.loads(value)
    assert len(recorded) == 3
    for trial, attrs in recorded.items():
        arch = Architecture.from_dict(attrs["architecture"])  # type: ignore[arg-type]
        assert arch.hash == attrs["hash"], trial
    assert {a["hash"] for a in recorded.values()} == {"4131aa0f85ac", "18dd75c1342a"}
    assert Architecture.baseline().hash == "4131aa0f85ac"


@pytest.mark.parametrize("choice, match", [
    (StageChoice(width=0.3), r"stage p3_backbone: width must be a multiple of 0.125 in \[0.25, 2.0\], got 0.3"),
    (StageChoice(width=4.0), r"width must be .*, got 4.0"),
    (StageChoice(width=True), r"width must be .*, got True"),  # type: ignore[arg-type]
    (StageChoice(width=float("nan")), r"width must be .*, got nan"),
    (StageChoice(depth=0), r"stage p3_backbone: depth must be an integer in \[1, 8\], got 0"),
    (StageChoice(depth=2.0), r"depth must be an integer in \[1, 8\], got 2.0"),  # type: ignore[arg-type]
    (StageChoice(depth=9), r"depth must be an integer in \[1, 8\], got 9"),
], ids=["width-step", "width-high", "width-bool", "width-nan", "depth-0", "depth-float", "depth-high"])
def test_create_rejects_bad_widths_and_depths(choice: StageChoice, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Architecture.create({"p3_backbone": choice})
    data = {"stages": {"p3_backbone": {"block": "C3k2", "width": choice.width, "depth": choice.depth}}}
    with pytest.raises(ValueError, match=match.split(": ", 1)[-1]):
        Architecture.from_dict(data)


# ---------------------------------------------------------------------------------------------- head stem and RepBlock


def test_a_stock_head_stem_leaves_the_hash_and_the_dict() -> None:
    """Architectures recorded before head stems existed keep their hash: the stock stem writes nothing."""
    for layers in (1, 2):
        arch = Architecture.create(head_stem="stock", head_stem_layers=layers)  # layers do not apply to stock
        assert arch == Architecture.baseline() and arch.hash == "4131aa0f85ac" and arch.is_baseline
        assert set(arch.to_dict()) == {"base", "scale", "stages"}
    assert Architecture.create(dict(REP.stages), scale="s", head_stem="stock").hash == REP.hash
    assert REP.blocks_summary().endswith("C3k2") and "head" not in REP.blocks_summary()


def test_a_repconv_head_stem_is_recorded_hashed_and_round_trips() -> None:
    one = Architecture.create(dict(REP.stages), scale="s", head_stem="repconv", head_stem_layers=1)
    two = Architecture.create(dict(REP.stages), scale="s", head_stem="repconv", head_stem_layers=2)
    assert len({REP.hash, one.hash, two.hash}) == 3
    assert {k: two.to_dict()[k] for k in ("head_stem", "head_stem_layers")} == {"head_stem": "repconv",
                                                                                "head_stem_layers": 2}
    for arch in (one, two):
        assert Architecture.from_json(arch.to_json()) == arch and not arch.is_baseline
    assert one.blocks_summary().endswith(" + repconv head, 1 layer")
    assert two.blocks_summary() == REP.blocks_summary() + " + repconv head, 2 layers"
    blocks = Architecture.create({"p4_backbone": StageChoice(block="RepBlock", se="in_blocks", kernels=(3, 5))})
    assert blocks.to_dict()["stages"]["p4_backbone"] == {"block": "RepBlock", "downsample": "Conv"}  # no SE, kernels
    assert blocks.hash != Architecture.baseline().hash


@pytest.mark.parametrize("head, match", [
    ({"head_stem": "repvgg"}, r"head_stem must be one of \['stock', 'repconv'\], got 'repvgg'"),
    ({"head_stem": "repconv", "head_stem_layers": 3}, r"head_stem_layers must be one of \[1, 2\], got 3"),
    ({"head_stem": "repconv", "head_stem_layers": 0}, r"head_stem_layers must be one of \[1, 2\], got 0"),
    ({"head_stem": "repconv", "head_stem_layers": True}, r"head_stem_layers must be one of \[1, 2\], got True"),
], ids=["unknown-stem", "layers-3", "layers-0", "layers-bool"])
def test_bad_head_stems_name_the_field_and_the_allowed_values(head: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Architecture.create(**head)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        Architecture.from_dict({"stages": {}, **head})
