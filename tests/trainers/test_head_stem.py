"""The RepVGG-branch Detect head (``head_stem: repconv``) and RepBlock stages in a real YOLO26 model.

- Official code: Ultralytics' own ``Detect`` with its per-scale branches rebuilt by
  :func:`trainers.model.yolo26.build_head_branch` gives, on the weights of ``tests/blocks/data/
  repvgg_reference.pt``, the outputs of YOLOv6's Efficient Decoupled Head (``effidehead.Detect``)
  whose cls/reg convs are official ``RepVGGBlock`` s (see ``make_reference_repvgg.py``).
- Structure: every branch of both heads (one-to-many and one-to-one) is ``RepBlock`` + the stock
  prediction conv (its bias initialisation kept), DFL-free; the NMS-free path gives top-k rows.
- Fuse: the model trains (every parameter gets a gradient) and its fused copy computes the same outputs.
- Ultralytics: ``DetectionModel.load`` (continuing from a checkpoint) and Ultralytics' exporter, through our
  ``RepDetectionModel``, export every RepConv fused (one ONNX Conv per fused conv) with the same detections.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from build_helpers import assert_trains_and_fuses, randomize_bn_
from torch import nn

from blocks import Reparameterizable, RepBlock
from trainers.model.architecture import Architecture, StageChoice
from trainers.model.build import build_model
from trainers.model.head_stem import HeadStem
from trainers.model.heads import pin_head
from trainers.model.yolo26 import HEAD_BRANCHES, build_head_branch

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = Path(__file__).resolve().parents[1] / "blocks" / "data" / "repvgg_reference.pt"
IMGSZ = 64
HEAD1 = Architecture.create(head_stem="repconv", head_stem_layers=1)
REP2 = Architecture.create({"p3_backbone": StageChoice(block="RepBlock", depth=2, downsample="RepConv"),
                            "p5_out": StageChoice(block="RepBlock", width=0.5)},
                           head_stem="repconv", head_stem_layers=2)
REPVGG_NAMES = (("rbr_dense.conv.", "conv_kxk.conv."), ("rbr_dense.bn.", "conv_kxk.bn."),
                ("rbr_1x1.conv.", "conv_1x1.conv."), ("rbr_1x1.bn.", "conv_1x1.bn."), ("rbr_identity.", "bn_identity."))


def head_name(name: str, one2one: bool) -> str | None:
    """A YOLOv6 effidehead key as ours (``reg_*`` -> box ``cv2``, ``cls_*`` -> class ``cv3``); ``None``: not ours.

    ``reg_convs.<i>.<j>.rbr_dense.conv.weight`` -> ``cv2.<i>.0.m.<j>.conv_kxk.conv.weight``,
    ``reg_preds.<i>.weight`` -> ``cv2.<i>.1.weight``; ``proj_conv`` (DFL, off) has no counterpart.
    """
    if name.startswith("proj_conv."):
        return None
    kind, i, rest = name.split(".", 2)
    branch = ("one2one_" if one2one else "") + ("cv2" if kind.startswith("reg") else "cv3")
    if kind.endswith("_preds"):
        return f"{branch}.{i}.1.{rest}"
    j, rest = rest.split(".", 1)
    theirs, ours = next(p for p in REPVGG_NAMES if rest.startswith(p[0]))
    return f"{branch}.{i}.0.m.{j}.{ours}{rest[len(theirs):]}"


def reference_head() -> tuple[Any, dict[str, Any]]:
    """Ultralytics' YOLO26-style Detect (DFL-free, two heads) with repconv stems, loaded with the reference weights."""
    from ultralytics.nn.modules.head import Detect

    ref = torch.load(REFERENCE, weights_only=True)["head"]
    a = ref["args"]
    detect = Detect(nc=a["nc"], reg_max=1, end2end=True, ch=tuple(a["ch"]))
    for name in HEAD_BRANCHES:
        branches: Any = getattr(detect, name)
        for i, branch in enumerate(branches):
            branches[i] = build_head_branch(branch, "repconv", a["layers"])
    mapped = {ours: v for one2one in (False, True) for k, v in ref["state_dict"].items()
              if (ours := head_name(k, one2one)) is not None}
    missing, unexpected = detect.load_state_dict(mapped, strict=False)
    assert unexpected == [] and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return detect, ref


def test_repconv_head_matches_the_official_yolov6_head() -> None:
    detect, ref = reference_head()
    assert detect.cv2[0][-1].in_channels == ref["args"]["c2"] and detect.cv3[0][-1].in_channels == ref["args"]["c3"]
    detect.train()  # the raw per-anchor outputs; BatchNorm on running statistics, as the reference ran
    for m in detect.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        preds = detect([x.clone() for x in ref["x"]])
    for head in ("one2many", "one2one"):
        scores, boxes = preds[head]["scores"], preds[head]["boxes"]
        torch.testing.assert_close(scores.sigmoid().permute(0, 2, 1), ref["cls_scores"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(boxes.permute(0, 2, 1), ref["reg_dists"], rtol=1e-5, atol=1e-5)
    detect.cv3[0][0].m[0].bn_identity = None  # guard: without the class stem's identity branch, no match
    with torch.no_grad():
        scores = detect([x.clone() for x in ref["x"]])["one2many"]["scores"]
    assert not torch.allclose(scores.sigmoid().permute(0, 2, 1), ref["cls_scores"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", [HEAD1, REP2], ids=["head-1", "repblock-head-2"])
def test_every_branch_of_both_heads_is_a_repblock_and_the_stock_prediction_conv(arch: Architecture) -> None:
    torch.manual_seed(0)
    stock, model = build_model(Architecture.create(dict(arch.stages)), nc=3), build_model(arch, nc=3)  # stock head
    head, stock_head = model.model[-1], stock.model[-1]
    assert head.reg_max == 1 and isinstance(head.dfl, nn.Identity)  # DFL-free box regression, as stock
    seen: set[int] = set()
    for name in HEAD_BRANCHES:
        for branch, plain in zip(getattr(head, name), getattr(stock_head, name)):
            stem, pred = branch
            assert isinstance(stem, HeadStem) and isinstance(stem, RepBlock) and len(stem.m) == arch.head_stem_layers
            assert stem.conv is stem.m[0].conv_kxk.conv  # what Ultralytics' DetectionModel.load reads
            first = next(m for m in plain.modules() if isinstance(m, nn.Conv2d))
            assert (stem.c1, stem.c2) == (first.in_channels, plain[-1].in_channels)
            assert (pred.in_channels, pred.out_channels) == (plain[-1].in_channels, plain[-1].out_channels)
            torch.testing.assert_close(pred.bias, plain[-1].bias)  # Ultralytics' bias_init, kept
            ptrs = {p.data_ptr() for p in branch.parameters()}
            assert not ptrs & seen  # the one-to-one branches have stems of their own
            seen |= ptrs
    assert head.np == sum(p.numel() for p in head.parameters())
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        top_k = pin_head(copy.deepcopy(model).eval(), "nms_free")(x)[0]
        dense = pin_head(copy.deepcopy(model).eval(), "nms")(x)[0]
    assert top_k.shape == (1, 84, 6)  # NMS-free: top-k rows (all 84 anchors at 64 px) of box, score, class
    assert dense.shape == (1, 4 + 3, 84)  # one-to-many: every anchor, for NMS


@pytest.mark.parametrize("arch", [HEAD1, REP2], ids=["head-1", "repblock-head-2"])
def test_repconv_head_and_repblock_stages_train_and_fuse(arch: Architecture) -> None:
    assert_trains_and_fuses(arch, IMGSZ)


def test_ultralytics_load_continues_a_repconv_head_model() -> None:
    """``DetectionModel.load`` (what continuing from best.pt runs) reads ``cv2[i][0].conv``: a RepBlock answers."""
    torch.manual_seed(0)
    model, source = build_model(REP2, nc=3), build_model(REP2, nc=3)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    model.load(source, verbose=False)
    theirs = source.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    fused = copy.deepcopy(model).eval().fuse(verbose=False)
    stem = fused.model[-1].cv2[0][0]
    assert isinstance(stem, HeadStem) and stem.conv is stem.m[0].fused  # still answers once fused


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ultralytics_exporter_fuses_repblock_and_the_head(tmp_path: Path) -> None:
    """Ultralytics' own exporter through ``RepDetectionModel.fuse``: no RepConv branch left, the same detections."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from trainers.deploy.ultralytics_export import export_with_ultralytics

    torch.manual_seed(0)
    model = randomize_bn_(build_model(REP2, nc=3), torch.rand(4, 3, IMGSZ, IMGSZ), seed=5)
    model.names = {0: "a", 1: "b", 2: "c"}
    ckpt = tmp_path / "best.pt"
    torch.save({"model": copy.deepcopy(model)}, ckpt)  # what Ultralytics' checkpoints hold: the pickled model
    exported = export_with_ultralytics(ckpt, tmp_path / "best.onnx", "onnx", IMGSZ, "nms_free")

    fused = pin_head(copy.deepcopy(model).eval(), "nms_free").fuse(verbose=False)
    assert not [m for m in fused.modules() if isinstance(m, Reparameterizable) and not m.is_fused()]
    convs = sum(isinstance(m, nn.Conv2d) for m in fused.modules())
    assert sum(n.op_type == "Conv" for n in onnx.load(str(exported)).graph.node) == convs  # one per fused conv
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = fused(x)[0]
    (got,) = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    assert got.shape == tuple(want.shape) == (1, 84, 6)
    # k = 84 is every anchor at 64 px: both hold the same rows, in an order near-tied scores may change. Rows
    # sorted by box; boxes of this random-BN model reach ~1e2 px, where float32 rounding is ~1e-2 px.
    def rows(a: Any) -> torch.Tensor:
        a = torch.as_tensor(a)[0]
        return a[torch.argsort(a[:, 0] * 1e4 + a[:, 1])]
    scale = float(want[..., :4].abs().max())
    torch.testing.assert_close(rows(got)[:, :4], rows(want)[:, :4], rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(rows(got)[:, 4:], rows(want)[:, 4:], rtol=0, atol=1e-4)
