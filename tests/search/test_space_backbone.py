"""The ``backbone`` field of a space: a conditional choice whose RepViT values take the backbone stages away.

With a RepViT backbone the backbone stages' parameters are never asked and a stage tied to one stays
stock; a space that lists a backbone stage without ``yolo26`` in ``backbone``, or an unknown
backbone, is one line naming the field and the allowed values, exit 2 (``search.space check`` and
``search.run``); the one-shot mode, whose supernet has no RepViT backbone, refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import FixedTrial
from search_helpers import run_search
from test_space_cli import one_error_line, space_cli

from search.space import SearchSpace, SpaceError
from search.space.__main__ import sample_architectures
from search.space.corners import corners
from search.space.schema import parse_space
from search.space.supernet import supernet_spec
from trainers.model.architecture import Architecture, StageChoice

SPACE = """
backbone: [yolo26, repvit_m0_6, repvit_m0_9]
stages:
  p3_backbone: {block: [C3k2, OREPA], width: [0.5, 1.0]}
  p4_backbone: {block: [C3k2, RepViT], se: {placement: [none, in_blocks]}, downsample: [Conv, RepConv]}
  p4_neck: {block: [C3k2, C3k2_RVB_SE]}
  p4_out: {tie: p4_backbone}
  p3_out: {tie: p4_neck}
"""
ALLOWED = "['yolo26', 'repvit_m0_6', 'repvit_m0_9', 'repvit_m1_0', 'repvit_m1_1', 'repvit_m1_5', 'repvit_m2_3']"


class Answers:
    """A ``TrialLike`` that answers from a dict (else the first choice) and records what it was asked."""

    def __init__(self, answers: dict[str, Any]):
        self.answers, self.asked = answers, []

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.asked.append(name)
        return self.answers.get(name, choices[0])


@pytest.fixture
def space() -> SearchSpace:
    import yaml

    return SearchSpace(parse_space(yaml.safe_load(SPACE), "space.yaml"))


def test_a_repvit_backbone_asks_only_the_neck_stages(space: SearchSpace) -> None:
    trial = Answers({"backbone": "repvit_m0_9", "p4_neck.block": "C3k2_RVB_SE"})
    arch = space.suggest(trial)
    assert trial.asked == ["backbone", "p4_neck.block"]
    assert arch.backbone == "repvit_m0_9"
    assert list(arch.to_dict()["stages"]) == ["p4_neck", "p3_out", "p4_out", "p5_out"]
    assert arch.stage("p3_out") == arch.stage("p4_neck") == StageChoice(block="C3k2_RVB_SE", downsample=None)
    assert arch.stage("p4_out") == StageChoice()  # tied to p4_backbone, which the RepViT backbone replaces


def test_the_yolo26_backbone_asks_every_stage(space: SearchSpace) -> None:
    trial = Answers({"backbone": "yolo26", "p4_backbone.block": "RepViT", "p4_backbone.RepViT.se": "in_blocks",
                     "p4_backbone.downsample": "RepConv"})
    arch = space.suggest(trial)
    assert trial.asked == ["backbone", "p3_backbone.block", "p3_backbone.width", "p4_backbone.block",
                           "p4_backbone.RepViT.se", "p4_backbone.downsample", "p4_neck.block"]
    assert arch.backbone == "yolo26" and "backbone" not in arch.to_dict()
    assert arch.stage("p4_out") == arch.stage("p4_backbone") and arch.stage("p4_out").downsample == "RepConv"


def test_size_dimensions_baseline_and_corners(space: SearchSpace) -> None:
    # yolo26: p3_backbone 2 blocks x 2 widths, p4_backbone (C3k2 + RepViT x 2 SE) x 2 downsamples, p4_neck 2
    # blocks: 4 x 6 x 2 = 48; each RepViT backbone: p4_neck alone, 2.
    assert space.size() == 48 + 2 + 2
    assert space.dimensions() == 1 + 2 + 3 + 1  # backbone; p3_backbone block, width; p4 block, RepViT.se, ds; p4_neck
    params = space.baseline_params()
    assert params["backbone"] == "yolo26" and space.suggest(FixedTrial(params)) == space.baseline()
    found = corners(space)
    assert {found[f"{end} {b}"].backbone for end in ("fast", "slow") for b in ("repvit_m0_6", "repvit_m0_9")} == {
        "repvit_m0_6", "repvit_m0_9"}
    assert found["slow OREPA"].backbone == "yolo26"


def test_random_sampling_draws_every_backbone_and_valid_architectures(space: SearchSpace) -> None:
    archs = sample_architectures(space, 40, seed=0)
    assert {a.backbone for a in archs} == {"yolo26", "repvit_m0_6", "repvit_m0_9"}
    for arch in archs:
        assert Architecture.from_json(arch.to_json()) == arch
        if arch.backbone != "yolo26":
            assert all(arch.stage(n) == StageChoice(downsample="Conv") for n in ("p3_backbone", "p4_backbone"))


@pytest.mark.parametrize(("text", "field", "message"), [
    ("backbone: [yolo26, repvit_m4]\nstages: {p4_neck: {block: RepViT}}\n", "backbone[1]",
     f"must be one of {ALLOWED}, got 'repvit_m4'"),
    ("backbone: repvit_m0_6\nstages: {p4_neck: {block: RepViT}, p3_backbone: {block: [C3k2, OREPA]}}\n",
     "stages.p3_backbone", "a backbone stage applies only with backbone 'yolo26'; with backbone ['repvit_m0_6'] the "
     "stages allowed are ['p4_neck', 'p3_out', 'p4_out', 'p5_out'], got 'p3_backbone'"),
], ids=["unknown-backbone", "backbone-stage-without-yolo26"])
def test_a_bad_backbone_field_names_the_field_and_the_allowed_values(text: str, field: str, message: str,
                                                                     tmp_path: Path) -> None:
    import yaml

    with pytest.raises(SpaceError) as err:
        parse_space(yaml.safe_load(text), "space.yaml")
    assert (err.value.field, err.value.message) == (field, message)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert one_error_line(space_cli("check", str(path))) == f"error: {path}: {field}: {message}"


def test_check_and_sample_handle_the_backbone(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    proc = space_cli("check", str(path))
    assert proc.returncode == 0 and json.loads(proc.stdout)["size"] == 52 and json.loads(proc.stdout)["dimensions"] == 7
    proc = space_cli("sample", str(path), "--n", "3", "--seed", "1", "--imgsz", "64", "--nc", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = sample_architectures(SearchSpace.load(path), 3, 1)
    assert [Architecture.from_dict(line) for line in lines] == expected
    assert any(line.get("backbone", "yolo26") != "yolo26" for line in lines)


def test_search_run_refuses_a_bad_backbone_and_oneshot_with_repvit(tmp_path: Path) -> None:
    r = run_search(tmp_path, "backbone: resnet50\nstages: {p4_neck: {block: RepViT}}\n", timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"backbone[0]: must be one of {ALLOWED}" in r.stderr
    r = run_search(tmp_path, SPACE, "--mode", "oneshot", timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "backbone: --mode oneshot supports only ['yolo26'] (the supernet has no RepViT backbone), got " in r.stderr
    import yaml

    with pytest.raises(ValueError, match=r"backbone: a supernet is built on backbone 'yolo26' only"):
        supernet_spec(parse_space(yaml.safe_load(SPACE)))
