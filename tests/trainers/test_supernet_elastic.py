"""Elastic width and depth: the supernet of spaces/yolo26.yaml is built at each stage's largest width and depth,
and a narrower or shallower path runs on, trains and is extracted from leading slices of its tensors.

For 20 sampled paths (nearly all narrower than the built shape somewhere): the supernet's forward equals
its extracted subnet and a fresh ``build_model(arch)`` loaded with the subnet's weights, the fused subnet and
(for 2) its ONNX export match them. A training step on a narrow path gives the supernet exactly the
gradients and BatchNorm statistics the extracted subnet gets, in the leading slices only. Also: only learned
tensors are sliced, parameter counts, pickling, the spec's
record, the stages whose width is pinned, and the slicing errors.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch

from search.space import load_space
from search.space.schema import parse_space
from search.space.supernet import sample_path, supernet_spec, width_pinned
from tests.trainers.supernet_helpers import (
    IMGSZ,
    assert_extracts_as_build_model,
    assert_fused_close,
    on_path,
    outputs,
)
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import build_model
from trainers.model.elastic import leading_slice, sliced_state
from trainers.model.extract import extract
from trainers.model.supernet import PathParams, SupernetModel, build_supernet, path_state_dict, set_path
from trainers.model.supernet_spec import StageCandidates, SupernetSpec

SPACES = Path(__file__).resolve().parents[2] / "spaces"
NC = 3
SPACE = load_space(SPACES / "yolo26.yaml")
SPEC = supernet_spec(SPACE)
PATHS = {f"seed{s}": sample_path(SPEC, s) for s in range(20)}
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def supernet() -> SupernetModel:
    torch.manual_seed(0)
    return build_supernet(SPEC, nc=NC)


def test_the_default_space_is_elastic_in_width_and_depth() -> None:
    assert width_pinned(SPACE) == {}
    for name, st in SPACE.stages:
        s = SPEC.stage(name)
        target = st.tie or name
        assert s.widths == dict(SPACE.stages)[target].widths and s.width == max(s.widths)
        assert s.depths == ((None, 2) if target in ("p4_backbone", "p5_backbone") else (None,))
        assert s.depth == (2 if len(s.depths) > 1 else None)
    assert SupernetSpec.from_dict(SPEC.to_dict()) == SPEC
    elastic = [a for a in PATHS.values() if SPEC.built(a) != a]
    assert len(elastic) >= 18 and len({a.stage("p3_backbone").width for a in PATHS.values()}) >= 4
    old = {k: v for k, v in SPEC.stage("p4_backbone").to_dict().items() if k not in ("widths", "depths")}
    assert StageCandidates.from_dict(old).widths == (1.25,) and StageCandidates.from_dict(old).depths == (2,)


def test_width_is_pinned_where_a_narrower_repconv_would_gain_a_branch() -> None:
    wide = load_space(SPACES / "yolo26_wide.yaml")
    assert set(width_pinned(wide)) == {n for n, st in wide.stages if st.tie is None}
    assert all(s.widths == (1.0,) for _, s in supernet_spec(wide).stages)
    heads = parse_space({"head_stem": ["stock", "repconv"], "stages": {
        "p2_backbone": {"block": ["C3k2"], "width": [0.5, 1.0]},
        "p3_backbone": {"block": ["C3k2"], "width": [0.5, 0.75]}, "p3_out": {"tie": "p3_backbone"}}})
    assert set(width_pinned(heads)) == {"p3_backbone"} and "head stems" in width_pinned(heads)["p3_backbone"]
    spec = supernet_spec(heads)
    assert spec.stage("p3_backbone").widths == (0.5,) and spec.stage("p2_backbone").widths == (0.5, 1.0)


def test_a_repblock_pins_the_stages_feeding_it_and_every_path_slices() -> None:
    """p4_out reads p4_neck: at p4_neck x0.5 its input (64 + 64) would equal its output (128), and its RepConv would
    gain an identity branch the supernet, built at p4_neck x1.0, lacks."""
    space = parse_space({"stages": {
        "p2_backbone": {"block": ["C3k2"], "width": [0.5, 1.0]},
        "p4_neck": {"block": ["C3k2"], "width": [0.5, 1.0]},
        "p4_out": {"block": ["RepBlock", "C3k2"]}}})
    assert set(width_pinned(space)) == {"p4_out", "p4_neck"}
    spec = supernet_spec(space)
    assert spec.stage("p4_neck").widths == (1.0,) and spec.stage("p2_backbone").widths == (0.5, 1.0)
    torch.manual_seed(0)
    net = build_supernet(spec, nc=NC)
    archs = {sample_path(spec, s) for s in range(12)}
    assert {a.stage("p2_backbone").width for a in archs} == {0.5, 1.0}
    for arch in archs:
        assert path_state_dict(net, arch).keys() == build_model(arch, nc=NC).state_dict().keys()


def test_a_tied_stage_takes_its_targets_width_and_depth() -> None:
    arch = Architecture.create({"p4_backbone": StageChoice(width=0.5), "p4_neck": StageChoice(width=1.0),
                                "p4_out": StageChoice(width=0.5)})
    with pytest.raises(ValueError, match="stage p4_neck is tied to p4_backbone: got width 1.0 and depth 1, "
                                         "p4_backbone has width 0.5 and depth 1"):
        SPEC.check(arch)


@pytest.mark.parametrize("name", list(PATHS))
def test_an_elastic_path_extracts_to_build_model_with_its_slices(supernet: SupernetModel, name: str) -> None:
    arch = PATHS[name]
    x, want = on_path(supernet, arch, seed=3 + int(name[4:]))
    assert (supernet.elastic_path is None) == (SPEC.built(arch) == arch)
    assert_extracts_as_build_model(supernet, arch, x, want, NC)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["seed0", "seed2"])
def test_an_elastic_path_exports_to_onnx(supernet: SupernetModel, name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from trainers.deploy.onnx_io import export_onnx

    arch = PATHS[name]
    assert SPEC.built(arch) != arch
    x, want = on_path(supernet, arch, seed=11)
    sub = extract(supernet, arch)
    with torch.no_grad():
        truth = copy.deepcopy(sub).double()(x.double())[0][:1]
    path = export_onnx(copy.deepcopy(sub).fuse(verbose=False, imgsz=IMGSZ), tmp_path / "sub.onnx", IMGSZ)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x[:1].numpy()})
    assert_fused_close(torch.from_numpy(got), x[:1], truth, want[0][:1])


def test_only_learned_tensors_are_sliced() -> None:
    """A path's state is parameters and BN statistics only (what a step trains); the buffers made from a layer's
    shape (OREPA's identity and DCT basis, the dynamic SE's centres) are not in it, so they come from the path's
    own structure, never from slices of wider ones."""
    shape_buffers: set[str] = set()
    for arch in list(PATHS.values())[:10]:
        model = build_model(arch, nc=NC)
        state, params = model.state_dict(), {n for n, _ in model.named_parameters()}
        assert all(k in params or k.endswith(BN_STATS) for k in state)
        shape_buffers |= {n.rsplit(".", 1)[-1] for n, _ in model.named_buffers() if n not in state}
    assert {"identity", "basis"} <= shape_buffers


def test_params_count_as_the_paths_own_model(supernet: SupernetModel) -> None:
    count = PathParams(supernet)
    for arch in [*list(PATHS.values())[:4], SPEC.built(PATHS["seed0"])]:
        assert count(arch) == sum(p.numel() for p in build_model(arch, nc=NC).parameters())


def narrow_path() -> Architecture:
    """A sampled path at a p4 width and depth below the built ones (the neck stages tied to p4 follow)."""
    return next(a for a in (sample_path(SPEC, s) for s in range(100))
                if a.stage("p4_backbone").width < 1.0 and a.stage("p4_backbone").depth is None)


def test_a_training_step_on_an_elastic_path_is_the_extracted_subnets(supernet: SupernetModel) -> None:
    """Same loss; the supernet's gradients and BN statistics are the subnet's, in the leading slices only."""
    from ultralytics.cfg import get_cfg

    net, arch = copy.deepcopy(supernet), narrow_path()
    on_path(net, arch, seed=5)
    sub = extract(net, arch).train()
    net.args = sub.args = get_cfg()
    built = path_state_dict(net, SPEC.built(arch), keep_vars=True)
    before = {k: v.detach().clone() for k, v in built.items()}
    set_path(net.train(), arch)
    batch = {"img": torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(2)),
             "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.4, 0.3, 0.3]])}
    mine, theirs = net.loss(batch)[0].sum(), sub.loss(batch)[0].sum()
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    mine.backward()
    theirs.backward()
    grads = dict(sub.named_parameters())
    narrower = 0
    for key, value in sub.state_dict().items():
        big = built[key]
        inside = leading_slice(big, value.shape)
        if key in grads and grads[key].grad is not None:
            torch.testing.assert_close(leading_slice(big.grad, value.shape), grads[key].grad, rtol=1e-4, atol=1e-6)
            outside = big.grad.clone()
            leading_slice(outside, value.shape).zero_()
            assert not outside.any(), key
        elif key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(inside, value, rtol=1e-5, atol=1e-6)
            rest = big.detach().clone()
            leading_slice(rest, value.shape).copy_(leading_slice(before[key], value.shape))
            assert torch.equal(rest, before[key]), key  # outside the slice: unchanged
        narrower += value.shape != big.shape
    assert narrower > 50
    on_path_tensors = {id(t) for t in built.values()}
    untouched = [p for p in net.parameters() if id(p) not in on_path_tensors]
    assert untouched and all(p.grad is None for p in untouched)


def test_an_elastic_supernet_pickles_with_its_path(supernet: SupernetModel, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = PATHS["seed4"]
    x, want = on_path(supernet, arch, seed=9)
    keys = len(supernet.state_dict())
    for other in (pickle.loads(pickle.dumps(supernet)), copy.deepcopy(supernet)):
        assert other.elastic_path == arch
        for g, w in zip(outputs(other, x), want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert len(supernet.state_dict()) == keys  # the skeleton is not part of the supernet
    half = copy.deepcopy(supernet).half()  # as Ultralytics' final validation runs it on a GPU: the skeleton's own
    import trainers.model.build as build  # buffers (OREPA's basis...) follow the state's type, or float32 meets half
    import trainers.model.elastic as elastic

    monkeypatch.setattr(elastic, "_cache", type(elastic._cache)())  # no skeleton of this path in any type yet
    half.prepare(arch)

    built: list[Architecture] = []
    real = build.build_model
    monkeypatch.setattr(build, "build_model", lambda a, *args, **kw: built.append(a) or real(a, *args, **kw))
    with torch.no_grad():
        got = half(x.half())[0]
    assert built == []  # the forward runs on the skeleton prepare() built at the supernet's placement (SPOS' prefetch)
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(got, extract(half, arch).half().eval()(x.half())[0], rtol=0, atol=0)
    assert got.dtype == torch.float16 and "OREPAConv" in {type(m).__name__ for m in extract(supernet, arch).modules()}


def test_slicing_errors_name_the_tensor() -> None:
    big = {"a.weight": torch.zeros(8, 4, 3, 3)}
    assert sliced_state(big, {"a.weight": torch.zeros(2, 4, 3, 3)})["a.weight"].data_ptr() == big["a.weight"].data_ptr()
    with pytest.raises(ValueError, match="b.weight: not in the supernet's path at its built shape"):
        sliced_state(big, {"b.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"a.weight: a \(8, 5, 3, 3\) tensor is not a leading slice of a \(8, 4, 3"):
        sliced_state(big, {"a.weight": torch.zeros(8, 5, 3, 3)})
