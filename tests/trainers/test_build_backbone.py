"""A RepViT backbone in place of YOLO26's: the architecture field, the built detector, its fuse and export.

``Architecture.backbone`` (default ``yolo26``, never written, so stock hashes stay), a RepViT config
replacing layers 0-8 with the neck parsed on its P3/P4/P5, the detector's backbone computing exactly
the blocks' ``RepViTNet`` (whose match with the official code ``tests/blocks/test_repvit_backbone.py``
proves), training-mode gradients, the fuse, a checkpoint's rebuild and Ultralytics' exporter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from build_helpers import assert_trains_and_fuses, randomize_bn_
from torch import nn

from blocks.repvit_backbone import RepViTNet
from blocks.repvit_configs import REPVIT_CONFIGS
from trainers.deploy.inference import count_params, fused_copy
from trainers.model.architecture import Architecture, StageChoice, read_architecture
from trainers.model.build import architecture_of, build_model, model_from_yaml
from trainers.model.layout import BACKBONE_STAGES, STAGE_LAYERS
from trainers.model.yolo26 import repvit_layers

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = 64
NECK = [n for n in STAGE_LAYERS if n not in BACKBONE_STAGES]
REPVIT = Architecture.create({"p3_out": StageChoice(block="RepViT", kernels=(3, 5), width=0.75)},
                             backbone="repvit_m0_6")


def test_the_yolo26_backbone_is_the_default_and_leaves_every_hash() -> None:
    stock = Architecture.create(backbone="yolo26")
    assert stock == Architecture.baseline() and stock.hash == "4131aa0f85ac" and stock.is_baseline
    assert "backbone" not in stock.to_dict()
    shaped = {"p3_backbone": StageChoice(block="OREPA", width=0.75)}
    assert Architecture.create(shaped, backbone="yolo26").hash == Architecture.create(shaped).hash


def test_a_repvit_architecture_records_its_backbone_and_only_the_neck_stages() -> None:
    data = REPVIT.to_dict()
    assert data["backbone"] == "repvit_m0_6" and list(data["stages"]) == NECK
    assert data["stages"]["p3_out"] == {"block": "RepViT", "kernels": [3, 5], "width": 0.75}
    assert Architecture.from_json(REPVIT.to_json()) == REPVIT and not REPVIT.is_baseline
    assert REPVIT.blocks_summary() == "repvit_m0_6/C3k2/RepViT x0.75/C3k2/C3k2"
    others = {Architecture.create(backbone=b).hash for b in ("yolo26", "repvit_m0_6", "repvit_m0_9")}
    assert len(others) == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"backbone": "repvit_m3"}, r"backbone must be one of \['yolo26', 'repvit_m0_6', 'repvit_m0_9', 'repvit_m1_0', "
                                r"'repvit_m1_1', 'repvit_m1_5', 'repvit_m2_3'\], got 'repvit_m3'"),
    ({"backbone": "repvit_m0_9", "stages": {"p4_backbone": StageChoice(width=0.5)}},
     r"stage p4_backbone: a backbone stage takes choices only with backbone 'yolo26'; with backbone 'repvit_m0_9' "
     r"the stages that take choices are \['p4_neck', 'p3_out', 'p4_out', 'p5_out'\], got p4_backbone "),
    ({"backbone": "repvit_m0_6", "stages": {"p2_backbone": StageChoice(downsample="RepConv")}},
     r"stage p2_backbone: a backbone stage takes choices only"),
])
def test_a_choice_a_repvit_backbone_cannot_apply_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Architecture.create(**kwargs)


def test_an_architecture_file_with_a_bad_backbone_names_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({**REPVIT.to_dict(), "stages": {"p3_backbone": {"block": "RepViT"}}}))
    with pytest.raises(ValueError, match=r"^--arch .*arch\.json: stage p3_backbone: a backbone stage takes choices"):
        read_architecture(path)
    path.write_text(json.dumps({**REPVIT.to_dict(), "backbone": "resnet50"}))
    with pytest.raises(ValueError, match=r"^--arch .*: backbone must be one of \['yolo26', .*got 'resnet50'"):
        read_architecture(path)


def _layer_outputs(model: Any, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    hooks = [model.model[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o)) for i in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [seen[i] for i in layers]


def test_the_detector_backbone_is_the_repvit_network_and_the_neck_keeps_its_widths() -> None:
    torch.manual_seed(0)
    model = build_model(REPVIT, nc=3).eval()
    stock = build_model(Architecture.create({"p3_out": REPVIT.stage("p3_out")}), nc=3)
    net = RepViTNet(REPVIT_CONFIGS["m0_6"])
    assert architecture_of(model) == REPVIT and model.stride.tolist() == [8, 16, 32]
    assert sum(count_params(model.model[i]) for i in range(9)) == count_params(net) == 2_165_652
    for i in range(9, len(model.model)):  # every later layer as stock, but the three that read RepViT's features
        shapes = [[tuple(p.shape) for p in m.model[i].parameters()] for m in (model, stock)]
        assert (shapes[0] == shapes[1]) == (i not in (9, 13, 16)), i
    assert model.model[9].cv1.conv.in_channels == 320  # SPPF on RepViT's P5
    assert model.model[13].cv1.conv.in_channels == 256 + 160 and model.model[16][0].c1 == 128 + 80  # p3_out: RepViT
    # The same weights give the blocks' RepViTNet's stage outputs (with Ultralytics' BatchNorm eps, 1e-3).
    randomize_bn_(net, torch.rand(2, 3, IMGSZ, IMGSZ), seed=1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
    for i, layer in enumerate(repvit_layers(net)):
        model.model[i].load_state_dict(layer.state_dict())
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        want = net(x)[1:]
    for got, ref in zip(_layer_outputs(model, x, (4, 6, 8)), want):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize(("scale", "channels"), [("n", (40, 80, 160, 320)), ("s", (80, 160, 320, 640))])
def test_the_repvit_width_follows_the_scale(scale: str, channels: tuple[int, ...]) -> None:
    """The paper's widths at n; YOLO26's own widening at the other scales (s 2x)."""
    model = build_model(Architecture.create(backbone="repvit_m0_6", scale=scale), nc=3).eval()
    got = _layer_outputs(model, torch.rand(1, 3, IMGSZ, IMGSZ), (2, 4, 6, 8))
    assert tuple(o.shape[1] for o in got) == channels


def test_a_repvit_architecture_trains_and_fuses() -> None:
    assert_trains_and_fuses(REPVIT, IMGSZ)


def test_a_checkpoint_rebuilds_the_repvit_architecture() -> None:
    model = build_model(REPVIT, nc=3)
    rebuilt = model_from_yaml(model.yaml, nc=3)
    assert architecture_of(rebuilt) == REPVIT
    shapes = [[(k, v.shape) for k, v in m.state_dict().items()] for m in (model, rebuilt)]
    assert shapes[0] == shapes[1]


def test_ultralytics_exporter_folds_the_repvit_backbone(tmp_path: Path) -> None:
    """Ultralytics' ONNX export through ``RepDetectionModel``: one Conv per fused conv, the same detections."""
    onnx = pytest.importorskip("onnx")
    from ultralytics.nn.autobackend import AutoBackend

    from trainers.deploy.onnx_io import match_detections
    from trainers.deploy.ultralytics_export import export_with_ultralytics
    from trainers.model.heads import pin_head

    torch.manual_seed(0)
    model = randomize_bn_(build_model(REPVIT, nc=3), torch.rand(4, 3, IMGSZ, IMGSZ), seed=0)
    torch.save({"model": model}, tmp_path / "best.pt")
    exported = export_with_ultralytics(tmp_path / "best.pt", tmp_path / "best.onnx", "onnx", IMGSZ, "nms_free")
    fused = fused_copy(model, before_fuse=lambda m: pin_head(m, "nms_free"))
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(exported)).graph.node)
    assert convs == sum(isinstance(m, nn.Conv2d) for m in fused.modules())
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    backend = AutoBackend(str(exported), device=torch.device("cpu"), verbose=False)
    with torch.no_grad():
        got, want = backend(x), fused(x)
    got, want = (torch.as_tensor(y[0] if isinstance(y, (list, tuple)) else y).float().numpy() for y in (got, want))
    assert got.shape == want.shape == (1, 84, 6)  # top-k of the 84 cells at 64 px
    assert match_detections(got, want).ok


@pytest.mark.slow
def test_a_repvit_architecture_trains_one_epoch_through_ultralytics(tmp_path: Path, coco8_copy: Path) -> None:
    """Our trainer (Ultralytics' loop) for one epoch at 64 px: its checkpoint holds the RepViT architecture."""
    from trainers.train.trainer import ArchitectureTrainer

    trainer = ArchitectureTrainer(overrides={
        "model": "yolo26n.yaml", "data": str(coco8_copy), "epochs": 1, "imgsz": IMGSZ, "batch": 4, "device": "cpu",
        "project": str(tmp_path), "name": "run", "exist_ok": True, "pretrained": False, "plots": False,
        "workers": 0, "amp": False, "verbose": False, "nms": False, "seed": 0}, architecture=REPVIT)
    trainer.train()
    model = torch.load(trainer.best, weights_only=False)["model"]
    assert architecture_of(model) == REPVIT
    assert all(torch.isfinite(p).all() for p in model.parameters())
