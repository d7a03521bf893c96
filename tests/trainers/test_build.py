"""``build_model``: the baseline is exactly stock YOLO26; every sampled architecture (widths and depths
included) builds, trains (forward and backward), fuses to the same outputs; GFLOPs agree between thop
and torch's counter; a trained rep architecture survives its checkpoint (``best.pt``) and training
continues from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from build_helpers import assert_trains_and_fuses, module_types, shapes_of
from torch import nn

from search.space import SearchSpace
from trainers.deploy.inference import count_params, flop_counter_gflops, gflops
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import architecture_of, build_model, model_from_yaml
from trainers.model.layout import STAGE_LAYERS

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
STOCK_PARAMS = {"n": 2_572_280, "s": 10_009_784}  # YOLO("yolo26{n,s}.yaml") at nc=80
N_SAMPLES = 20
IMGSZ = 64

REP = Architecture.create({
    "p3_backbone": StageChoice(block="RepViT", se="in_blocks", se_reduction=8, kernels=(3, 5)),
    "p4_backbone": StageChoice(block="C3k2_RVB_SE", se="after_concat", kernels=(3, 5, 7)),
    "p5_backbone": StageChoice(block="OREPA", downsample="RepConv"),
    "p4_out": StageChoice(block="RepViT", se="in_blocks", se_kind="dynamic", se_min_ratio=4, se_max_ratio=8,
                          kernels=(3,), downsample="OREPA"),
})


@pytest.fixture(scope="module")
def stock() -> dict[str, Any]:
    """Stock ``YOLO("yolo26{n,s}.yaml").model``, built with torch seed 0."""
    from ultralytics import YOLO

    out = {}
    for scale in STOCK_PARAMS:
        torch.manual_seed(0)
        out[scale] = YOLO(f"yolo26{scale}.yaml").model
    return out


# ---------------------------------------------------------------------------------------------- baseline


def test_stage_layers_point_at_the_stock_c3k2_and_its_stride_2_conv(stock: dict[str, Any]) -> None:
    layers = stock["n"].model
    for name, (idx, ds) in STAGE_LAYERS.items():
        assert type(layers[idx]).__name__ == "C3k2", name
        if ds is not None:
            assert type(layers[ds]).__name__ == "Conv" and layers[ds].conv.stride == (2, 2), name
            between = [type(layers[i]).__name__ for i in range(ds + 1, idx)]
            assert ds < idx and set(between) <= {"Concat"}, name  # the conv feeds the stage (maybe via a Concat)
    c3k2 = [i for i, m in enumerate(layers) if type(m).__name__ == "C3k2"]
    assert sorted(idx for idx, _ in STAGE_LAYERS.values()) == c3k2  # every C3k2 of YOLO26 is a stage


@pytest.mark.parametrize("scale", list(STOCK_PARAMS))
def test_baseline_is_exactly_the_stock_model(stock: dict[str, Any], scale: str) -> None:
    torch.manual_seed(0)
    model = build_model(Architecture.baseline(scale=scale), nc=80)
    ref = stock[scale]
    assert count_params(model) == count_params(ref) == STOCK_PARAMS[scale]
    ours, theirs = model.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "same seed, different weights"
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    model.eval(), ref.eval()
    with torch.no_grad():
        got, expected = model(x), ref(x)
    assert shapes_of(got) == shapes_of(expected)
    assert shapes_of(got)[0] == (2, 4 + 80, 8 * 8 + 4 * 4 + 2 * 2)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)


def test_rep_architecture_has_the_stock_output_shapes(stock: dict[str, Any]) -> None:
    model = build_model(REP, nc=80).eval()
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        assert shapes_of(model(x)) == shapes_of(stock["n"].eval()(x))


def test_rep_architecture_swaps_the_stage_modules() -> None:
    from blocks import C3k2_RVB_SE, OREPAConv, RepConv, RepViTBlock

    model = build_model(REP, nc=3)
    layers = model.model
    p3, p3_ds = STAGE_LAYERS["p3_backbone"]
    assert isinstance(layers[p3], nn.Sequential) and all(isinstance(b, RepViTBlock) for b in layers[p3])
    assert type(layers[p3_ds]).__name__ == "Conv"
    assert isinstance(layers[STAGE_LAYERS["p4_backbone"][0]], C3k2_RVB_SE)
    p5, p5_ds = STAGE_LAYERS["p5_backbone"]
    assert type(layers[p5]).__name__ == "C3k2" and any(isinstance(m, OREPAConv) for m in layers[p5].modules())
    assert isinstance(layers[p5_ds], RepConv)
    assert isinstance(layers[STAGE_LAYERS["p4_out"][1]], OREPAConv)
    for i, layer in enumerate(layers):  # Ultralytics' forward and logging read these
        assert layer.i == i and hasattr(layer, "f") and hasattr(layer, "type")
        assert layer.np == count_params(layer), i
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all((m.eps, m.momentum) == (1e-3, 0.03) for m in bns), "swapped-in BN kept torch's defaults"


def test_the_architecture_is_recorded_in_the_model_yaml(stock: dict[str, Any]) -> None:
    model = build_model(REP, nc=3)
    assert model.yaml["architecture"] == REP.to_dict() and model.yaml["architecture_hash"] == REP.hash
    assert architecture_of(model) == REP
    assert architecture_of(stock["n"]) == Architecture.baseline()
    rebuilt = model_from_yaml(model.yaml, nc=3)
    assert architecture_of(rebuilt) == REP and count_params(rebuilt) == count_params(model)
    with pytest.raises(ValueError, match="records no architecture"):
        model_from_yaml(stock["n"].yaml, nc=80)


# ---------------------------------------------------------------------------------------------- sampled


def _samples(n: int, seed: int) -> list[Architecture]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load(REPO / "spaces" / "yolo26.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


SAMPLES = _samples(N_SAMPLES, seed=11)


def test_samples_cover_every_block_and_downsample() -> None:
    choices = [c for a in SAMPLES for _, c in a.stages]
    assert {c.block for c in choices} == {"C3k2", "RepViT", "C3k2_RVB_SE", "OREPA"}
    assert {c.downsample for c in choices} == {None, "Conv", "RepConv", "OREPA"}
    assert {c.se for c in choices} == {"none", "after_concat", "in_blocks"}
    assert {c.se_kind for c in choices if c.se != "none"} == {"fixed", "dynamic"}
    assert {c.width for c in choices} == {0.5, 0.625, 0.75, 0.875, 1.0, 1.25}
    assert {c.depth for c in choices} == {None, 2}


@pytest.mark.parametrize("arch", SAMPLES, ids=[a.hash for a in SAMPLES])
def test_sampled_architecture_trains_and_fuses(arch: Architecture) -> None:
    assert_trains_and_fuses(arch, IMGSZ)


# ---------------------------------------------------------------------------------------------- GFLOPs


@pytest.mark.parametrize("arch", [Architecture.baseline(), REP], ids=["baseline", "rep"])
def test_thop_gflops_agree_with_torch_flop_counter(arch: Architecture) -> None:
    model = build_model(arch, nc=80)
    thop, counted = gflops(model, 640), flop_counter_gflops(model, 640)
    assert thop > 1.0, "thop counted nothing (two packages named thop installed?)"
    assert thop == pytest.approx(counted, rel=0.05)
    if arch.is_baseline:  # fused stock YOLO26n at 640 px (the one-to-many head is dropped by the fuse)
        assert thop == pytest.approx(5.48, abs=0.01)
    else:
        assert thop > gflops(build_model(Architecture.baseline(), nc=80), 640)


# ---------------------------------------------------------------------------------------------- training


TRAIN_ARCH = Architecture.create({  # the checkpoint must also rebuild a stage's width and depth, and the head stem
    "p3_backbone": StageChoice(block="RepViT", se="in_blocks", se_reduction=4, kernels=(3, 5), width=0.75, depth=2),
    "p4_backbone": StageChoice(block="C3k2_RVB_SE", se="after_concat", se_reduction=8, kernels=(3,)),
    "p5_backbone": StageChoice(block="OREPA", downsample="RepConv"),
    "p5_out": StageChoice(block="RepBlock"),
}, head_stem="repconv", head_stem_layers=1)


def _overrides(data: Path, project: Path, name: str, **kw: Any) -> dict[str, Any]:
    return {"data": str(data), "epochs": 1, "imgsz": IMGSZ, "batch": 4, "device": "cpu", "workers": 0,
            "project": str(project), "name": name, "exist_ok": True, "plots": False, "val": True,
            "verbose": False, "amp": False, "seed": 0, **kw}


@pytest.mark.slow
def test_rep_architecture_trains_one_epoch_and_continues_from_best_pt(
        coco8_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.nn.tasks import load_checkpoint

    from trainers.train.trainer import ArchitectureTrainer

    assert os.environ.get("YOLO_OFFLINE") == "1"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    project = tmp_path / "runs"

    trainer = ArchitectureTrainer(overrides=_overrides(coco8_copy, project, "first", model="yolo26n.yaml",
                                                       pretrained=False), architecture=TRAIN_ARCH)
    trainer.train()
    best = project / "first" / "weights" / "best.pt"
    assert Path(trainer.best) == best and best.is_file()
    assert list(cwd.iterdir()) == [], "training wrote into the working directory"

    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    saved = ckpt.get("ema") or ckpt["model"]
    assert architecture_of(saved) == TRAIN_ARCH
    assert {"RepViTBlock", "C3k2_RVB_SE", "OREPAConv", "RepConv", "RepBlock"} <= module_types(saved)
    loaded, _ = load_checkpoint(best)
    assert architecture_of(loaded) == TRAIN_ARCH and "RepViTBlock" in module_types(loaded)
    start = {k: v.clone() for k, v in loaded.state_dict().items()}

    # No architecture= given: the trainer rebuilds from the checkpoint's yaml and loads its weights.
    at_start: dict[str, torch.Tensor] = {}
    again = ArchitectureTrainer(overrides=_overrides(coco8_copy, project, "again", model=str(best)))
    again.add_callback("on_train_start", lambda t: at_start.update(
        {k: v.detach().clone() for k, v in t.model.state_dict().items()}))
    again.train()
    assert again.architecture is None
    continued: Any = again.model
    assert architecture_of(continued) == TRAIN_ARCH
    assert {"RepViTBlock", "C3k2_RVB_SE", "OREPAConv", "RepConv", "RepBlock"} <= module_types(continued)
    assert count_params(continued) == count_params(loaded) != 2_572_280
    assert list(at_start) == list(start)
    assert all(torch.equal(at_start[k].float(), v.float()) for k, v in start.items()), "weights not loaded"
    assert (project / "again" / "weights" / "best.pt").is_file()
    assert list(cwd.iterdir()) == []
