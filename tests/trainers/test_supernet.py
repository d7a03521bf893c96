"""The supernet of spaces/yolo26_wide.yaml (every choice, RepBlock stages and RepConv head stems included): a path
extracted is ``build_model(arch)`` with the path's weights.

For the stock architecture and 8 sampled paths (BatchNorm statistics randomized on the path first;
the 20 elastic paths of the default space are tests/trainers/test_supernet_elastic.py's): the
supernet's forward, its extracted subnet and a fresh ``build_model(arch)`` loaded with
the subnet's state dict give the same outputs; the fused subnet and its ONNX export (onnxruntime)
match them to float32 rounding. Also: candidate counts against the space's own count, the errors
for architectures that are not paths, seeded sampling, and a supernet built at a non-stock shape
that survives pickling and a rebuild from its ``model.yaml``.
"""

from __future__ import annotations

import collections
import copy
import itertools
import pickle
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from search.space import SearchSpace, load_space
from search.space.schema import parse_space
from search.space.supernet import block_candidates, sample_path, supernet_spec
from tests.trainers.supernet_helpers import (
    IMGSZ,
    assert_extracts_as_build_model,
    assert_fused_close,
    on_path,
    outputs,
)
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.extract import extract
from trainers.model.layout import STAGE_LAYERS
from trainers.model.supernet import (
    ChoiceModule,
    SupernetModel,
    build_supernet,
    head_choice_modules,
    set_path,
    supernet_from_yaml,
)
from trainers.model.supernet_spec import SupernetSpec

SPACE = Path(__file__).resolve().parents[2] / "spaces" / "yolo26_wide.yaml"  # every family and option at every stage
NC = 3
SPEC = supernet_spec(load_space(SPACE))
PATHS = {"stock": Architecture.baseline(), **{f"seed{s}": sample_path(SPEC, s) for s in range(8)}}
ONNX_PATHS = ["stock", "seed0"]


@pytest.fixture(scope="module")
def supernet() -> SupernetModel:
    torch.manual_seed(0)
    return build_supernet(SPEC, nc=NC)


def test_candidates_match_the_space_count() -> None:
    space = SearchSpace.load(SPACE)
    assert SPEC.candidate_counts() == {n: (54, 0 if STAGE_LAYERS[n][1] is None else 3) for n in STAGE_LAYERS}
    for name, st in space.spec.stages:
        if st.tie is None:
            # the space counts every (block choice, downsample, width, depth); the supernet is elastic in depth, and
            # its widths are pinned here (RepBlock stages and RepConv head stems: see test_supernet_elastic)
            assert len(block_candidates(st)) * 3 * len(st.widths) * len(st.depths) == space.stage_size(name, st)
            assert "RepBlock" in st.blocks and StageChoice("RepBlock", downsample=None) in block_candidates(st)
    assert SPEC.head_stems == (("stock", 2), ("repconv", 1), ("repconv", 2)) == tuple(
        (s, n) for s in space.spec.head_stems for n in ((2,) if s == "stock" else space.spec.head_stem_layers))
    assert all(s.widths == (1.0,) and s.depths == (None, 2) for _, s in SPEC.stages)
    assert SPEC.paths() == (54 * 3 * 2) ** 4 * 3
    assert SupernetSpec.from_dict(SPEC.to_dict()) == SPEC


def _tensor_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def test_candidates_share_weights_within_a_family_only(supernet: SupernetModel) -> None:
    choices = [m for m in supernet.model if isinstance(m, ChoiceModule)]
    assert len(choices) == 8 + 6  # every stage, every stride-2 conv before a stage
    by_stage = [{k: _tensor_ids(c) for k, c in m.candidates.items()} for m in choices]
    for stage in by_stage:  # stages, families and downsample candidates never share
        for a, b in itertools.combinations(stage, 2):
            if a.split("-")[0] != b.split("-")[0]:
                assert not stage[a] & stage[b], (a, b)
    heads = head_choice_modules(supernet)
    assert len(heads) == 4 * 3  # box and class, one-to-many and one-to-one, at each of 3 scales
    assert all(m.choices == ("stock", "repconv1", "repconv2") for m in heads)
    by_stage += [{k: _tensor_ids(c) for k, c in m.candidates.items()} for m in heads]  # head stems: their own
    for a, b in itertools.combinations(by_stage, 2):
        assert not set().union(*a.values()) & set().union(*b.values())
    for module in heads:
        ids = [_tensor_ids(c) for c in module.candidates.values()]
        assert not any(x & y for x, y in itertools.combinations(ids, 2))
    for candidate in choices[-1].candidates.values():  # no two layers of one path are one tensor
        assert len(_tensor_ids(candidate)) == len(list(candidate.named_parameters(remove_duplicate=False)))
    stage = next(m for m in choices if "C3k2_RVB_SE-k3" in m.candidates).candidates
    plain, se4, se8 = (stage[k] for k in ("C3k2_RVB_SE-k3", "C3k2_RVB_SE-after_concat-fixed-r4-k3",
                                            "C3k2_RVB_SE-after_concat-fixed-r8-k3"))
    assert plain.cv1.conv.weight is se4.cv1.conv.weight is se8.cv1.conv.weight  # one trunk for every SE option
    se4_only, se8_only = _tensor_ids(se4) - _tensor_ids(plain), _tensor_ids(se8) - _tensor_ids(plain)
    assert se4_only and se8_only and not se4_only & se8_only  # SE of reduction 4 and 8: their own weights
    multi = stage["C3k2_RVB_SE-k3+5"].m[0].token_mixer[0].branches
    assert multi[0].conv.conv.weight is plain.m[0].token_mixer[0].conv.conv.weight  # kernel 3: one branch for all
    assert multi[1].conv.conv.weight is stage["C3k2_RVB_SE-k3+5+7"].m[0].token_mixer[0].branches[1].conv.conv.weight
    assert multi[0].bn is not multi[1].bn


@pytest.mark.parametrize("name", list(PATHS))
def test_extract_is_build_model_with_the_path_weights(supernet: SupernetModel, name: str) -> None:
    arch = PATHS[name]
    x, want = on_path(supernet, arch, seed=len(name) + sum(map(ord, name)))
    assert_extracts_as_build_model(supernet, arch, x, want, NC)


def test_paths_differ(supernet: SupernetModel) -> None:
    x, a = on_path(supernet, PATHS["seed0"], seed=1)
    set_path(supernet, PATHS["seed1"])
    b = outputs(supernet, x)
    assert float((a[0] - b[0]).abs().max()) > 1e-3 * float(a[0].abs().max())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ONNX_PATHS)
def test_extracted_onnx_matches_supernet(supernet: SupernetModel, name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from trainers.deploy.onnx_io import export_onnx

    arch = PATHS[name]
    x, want = on_path(supernet, arch, seed=7 + len(name))
    sub = extract(supernet, arch)
    with torch.no_grad():
        truth = copy.deepcopy(sub).double()(x.double())[0][:1]
    path = export_onnx(copy.deepcopy(sub).fuse(verbose=False, imgsz=IMGSZ), tmp_path / "sub.onnx", IMGSZ)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x[:1].numpy()})
    assert got.shape == tuple(want[0][:1].shape)
    assert_fused_close(torch.from_numpy(got), x[:1], truth, want[0][:1])


def test_supernet_fuse_is_a_no_op(supernet: SupernetModel) -> None:
    before = {k: v.clone() for k, v in list(supernet.state_dict().items())[:400]}
    assert supernet.fuse() is supernet
    after = supernet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in supernet.model[2].modules())


@pytest.mark.parametrize(("stages", "match"), [
    ({"p3_backbone": StageChoice(width=0.5)}, "stage p3_backbone: the supernet holds widths \\[1.0\\] and depths "
                                               "\\[1, 2\\], got width 0.5 and depth 1"),
    ({"p5_backbone": StageChoice(depth=3), "p5_out": StageChoice(depth=3)}, "stage p5_backbone: .* depth 3"),
    ({"p2_backbone": StageChoice("RepViT", kernels=(3, 5, 7, 9))}, "stage p2_backbone: 'RepViT-k3\\+5\\+7\\+9' is "
                                                                    "not one of its 54 candidates"),
    ({"p4_backbone": StageChoice("OREPA")}, "stage p4_neck is tied to p4_backbone"),
    ({"p5_backbone": StageChoice(downsample="OREPA")}, "stage p5_out is tied to p5_backbone: got 'C3k2 \\+ Conv'"),
])
def test_not_a_path_names_the_stage(supernet: SupernetModel, stages: dict[str, StageChoice], match: str) -> None:
    arch = Architecture.create(stages)
    with pytest.raises(ValueError, match=match):
        set_path(supernet, arch)
    with pytest.raises(ValueError, match=match):
        extract(supernet, arch)


def test_sampled_paths_are_seeded_and_cover_the_candidates() -> None:
    assert sample_path(SPEC, 3) == sample_path(SPEC, 3)
    assert len({a.hash for n, a in PATHS.items() if n != "stock"}) == 8
    rng = random.Random(0)
    draws = [sample_path(SPEC, rng) for _ in range(6000)]
    for arch in draws[:50]:
        SPEC.check(arch)
    assert len({a.stage("p2_backbone") for a in draws}) == 54 * 3 * 2  # x depths 1 and 2 (widths pinned here)
    families = collections.Counter(a.stage("p2_backbone").block for a in draws)
    assert len(families) == 5 and min(families.values()) > 1050  # each family a fifth, whatever its variants
    assert {(a.head_stem, a.head_stem_layers) for a in draws} == set(SPEC.head_stems)
    assert all(a.stage("p4_neck").block == a.stage("p4_backbone").block for a in draws)


def test_the_space_sampler_draws_supernet_paths() -> None:
    """Every architecture the space's own sampler suggests over the widths and depths the supernet holds is a path
    (the one-shot trials' space: search.engine.oneshot.supernet_space)."""
    from search.engine.oneshot import supernet_space

    space = supernet_space(SearchSpace.load(SPACE), SPEC)
    rng = random.Random(1)

    class Trial:
        def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
            return rng.choice(choices)

    archs = [space.suggest(Trial()) for _ in range(200)]
    for arch in archs:
        SPEC.check(arch)
    assert {a.stage("p4_backbone").depth for a in archs} == {None, 2}  # elastic depth drawn


SMALL = {"head_stem": ["stock", "repconv"], "head_stem_layers": [1], "stages": {
    "p3_backbone": {"block": ["C3k2", "RepViT"], "kernels": [[3], [3, 5]], "downsample": ["Conv", "OREPA"],
                    "width": [0.5, 1.0], "depth": [1, 2]},
    "p3_out": {"tie": "p3_backbone"},
}}


def test_a_supernet_at_another_shape_extracts_pickles_and_rebuilds() -> None:
    space = parse_space(SMALL)
    with pytest.raises(ValueError, match="stage p3_backbone: the space allows widths"):
        supernet_spec(space, {"p3_backbone": (0.75, 1)})
    with pytest.raises(ValueError, match="shape names stage 'p3_out'"):
        supernet_spec(space, {"p3_out": (0.5, 2)})
    spec = supernet_spec(space, {"p3_backbone": (0.5, 2)})
    assert spec.candidate_counts()["p3_backbone"] == (3, 2) and spec.candidate_counts()["p4_out"] == (1, 1)
    torch.manual_seed(0)
    net = build_supernet(spec, nc=NC)
    with pytest.raises(ValueError, match="stage p3_backbone: the supernet holds widths \\[0.5\\] and depths \\[2\\]"):
        set_path(net, Architecture.baseline())
    wrong_ds = Architecture.create({n: StageChoice(downsample="RepConv", width=0.5, depth=2)
                                    for n in ("p3_backbone", "p3_out")})
    with pytest.raises(ValueError, match="stage p3_backbone: downsample must be one of \\['Conv', 'OREPA'\\]"):
        set_path(net, wrong_ds)
    for seed in range(3):
        arch = sample_path(spec, seed)
        assert arch.stage("p3_out").width == 0.5 and arch.stage("p3_out").depth == 2
        x, want = on_path(net, arch, seed)
        for g, w in zip(outputs(extract(net, arch).eval(), x), want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    clone = pickle.loads(pickle.dumps(net))
    rebuilt = supernet_from_yaml(net.yaml, nc=NC)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    for other in (clone, rebuilt):
        set_path(other, arch)
        for g, w in zip(outputs(other.eval(), x), want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_ultralytics_load_reads_a_supernet_with_head_stems() -> None:
    """``DetectionModel.load`` (a resumed supernet run) indexes the head's branches: the choice modules answer."""
    spec = supernet_spec(parse_space(SMALL), {"p3_backbone": (0.5, 2)})
    assert spec.head_keys() == ("stock", "repconv1")
    torch.manual_seed(0)
    net = build_supernet(spec, nc=NC)
    source = copy.deepcopy(net)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    head = head_choice_modules(net)[0]
    assert head[-1] is head.candidates["stock"][-1]
    head.select("repconv1")
    assert head[-1] is head.candidates["repconv1"][-1] and head[0] is head.candidates["repconv1"][0]
    assert head[0].conv.out_channels == head[-1].in_channels  # the HeadStem's first 3x3 conv, as Ultralytics reads it
    head.select("stock")
    net.load(source, verbose=False)
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in net.state_dict().items())


def test_a_training_step_reaches_only_the_path() -> None:
    """Ultralytics' detection loss on the supernet: the path's candidates get gradients, the others none."""
    from ultralytics.cfg import get_cfg

    from trainers.model.supernet import choice_modules

    spec = supernet_spec(parse_space(SMALL), {"p3_backbone": (0.5, 2)})
    torch.manual_seed(0)
    net = build_supernet(spec, nc=NC)
    net.args = get_cfg()
    arch = sample_path(spec, 1)
    set_path(net.train(), arch)
    batch = {"img": torch.rand(2, 3, IMGSZ, IMGSZ), "batch_idx": torch.tensor([0.0, 1.0]),
             "cls": torch.tensor([[0.0], [1.0]]), "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.4, 0.3, 0.3]])}
    loss, _ = net.loss(batch)
    loss.sum().backward()
    for module in [*choice_modules(net).values(), *head_choice_modules(net)]:
        for key, candidate in module.candidates.items():
            grads = [p.grad is not None for p in candidate.parameters()]
            assert all(grads) if key == module.current else not any(grads), key
