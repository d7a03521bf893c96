"""Tests for blocks/repvit_backbone.py: the paper's RepViT networks against the official code and the paper.

The official code (THU-MIG/RepViT ``model/repvit.py``) is not imported here: what it computes is in
``data/repvit_reference.pt``, made by ``data/make_repvit_reference.py`` (run it to regenerate). The
fuse is proven like every other block's: randomized BatchNorm, fused vs unfused, float32 and the low
precisions of ``test_fuse_dtypes.py``, ONNX export.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from _helpers import assert_every_param_gets_grad, assert_fuse_matches, count_bn, count_params, randomize_
from test_fuse_dtypes import DTYPES, UNIT_ROUNDOFF, cpu_float16_conv_works
from torch import nn

from blocks import reparameterize_model
from blocks.registry import BACKBONES, repvit_config_name
from blocks.repvit import RepViTBlock
from blocks.repvit_backbone import RepViTNet, from_reference_state_dict, reference_key, repvit_se_hidden
from blocks.repvit_configs import REPVIT_CONFIGS, RepViTConfig, RepViTStage
from blocks.se import EfficientSE

FIXTURE = Path(__file__).with_name("data") / "repvit_reference.pt"

# Parameters of the ImageNet classifiers as the paper and the official README publish them
# (README of THU-MIG/RepViT at 298f420, table "Classification on ImageNet-1K", column #params; the
# same numbers as the CVPR 2024 paper). They count the deployed network: fused, one classifier.
# RepViT-M0.6 has no published count (the README only announces it: 74.1% top-1, ~0.6 ms);
# it is checked against the official code's own count, as the others are.
PUBLISHED_PARAMS = {"m0_9": 5.1e6, "m1_0": 6.8e6, "m1_1": 8.2e6, "m1_5": 14.0e6, "m2_3": 22.9e6}

# Every feature of the code path in a small network: SE on a stride-2 block too (no paper config has one).
TINY = RepViTConfig("tiny", (RepViTStage(8, (True, False)), RepViTStage(16, (True, False)),
                             RepViTStage(24, (False, True)), RepViTStage(32, (False, True))))


@pytest.fixture(scope="module")
def reference() -> dict:
    """The fixture made from the official code."""
    return torch.load(FIXTURE, weights_only=True)


def _randomized(config: RepViTConfig) -> RepViTNet:
    """``randomize_``d, then conv weights of std ``1 / sqrt(fan in)``.

    ``randomize_``'s N(0, 0.5^2) weights grow the activations about 10x per block: 1e7 after the eight
    blocks of ``TINY``, where float32 rounding alone moves an output by 10. These keep them near 10.
    """
    net = randomize_(RepViTNet(config))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2 / m.weight[0].numel() ** 0.5)
    return net


def _block_table(net: RepViTNet) -> list[tuple[int, int, bool]]:
    """``(out channels, stride, SE)`` of every block of ``net``, read from its modules."""
    blocks = [b for stage in net.stages for b in stage]
    assert all(isinstance(b, RepViTBlock) for b in blocks)
    return [(b.c2, b.s, isinstance(b.token_mixer[1], EfficientSE)) for b in blocks]


def _classifier(c: int) -> nn.Module:
    """The reference's classifier head: BatchNorm1d + Linear to the 1000 ImageNet classes."""
    return nn.Sequential(nn.BatchNorm1d(c), nn.Linear(c, 1000))


def test_every_repvit_config_is_a_backbone_name() -> None:
    assert BACKBONES == ("yolo26", *(f"repvit_{n}" for n in REPVIT_CONFIGS))
    assert [repvit_config_name(b) for b in BACKBONES] == [None, *REPVIT_CONFIGS]
    with pytest.raises(ValueError, match=r"backbone must be one of \['yolo26', 'repvit_m0_6', .*got 'repvit_m9'"):
        repvit_config_name("repvit_m9")


@pytest.mark.parametrize("name", list(REPVIT_CONFIGS))
def test_config_has_the_reference_blocks_and_parameter_counts(name: str, reference: dict) -> None:
    """Block by block as the official code builds it; its parameter counts exactly; the paper's within 1%."""
    net = RepViTNet(REPVIT_CONFIGS[name])
    assert _block_table(net) == [tuple(row) for row in reference["blocks"][name]]
    params = reference["params"][name]
    c = net.channels[-1]
    assert count_params(net) == params["features"]
    assert count_params(_classifier(c)) == params["classifier"]
    reparameterize_model(net.eval())
    fused = count_params(net) + c * 1000 + 1000  # the classifier fused: one Linear
    assert fused == params["fused"]
    if name in PUBLISHED_PARAMS:
        assert abs(fused / PUBLISHED_PARAMS[name] - 1) < 0.01, (fused, PUBLISHED_PARAMS[name])


def test_se_hidden_width_is_the_reference_rounding() -> None:
    """timm's ``make_divisible(c / 4, 8)`` (to nearest, at least 8), as the reference's SqueezeExcite(c, 0.25)."""
    assert {c: repvit_se_hidden(c) for c in (8, 40, 48, 56, 80, 96, 112, 224, 640)} == {
        8: 8, 40: 8, 48: 16, 56: 16, 80: 24, 96: 24, 112: 32, 224: 56, 640: 160}
    assert EfficientSE(40, hidden=8).fc1.out_channels == 8 and EfficientSE(40).fc1.out_channels == 10
    with pytest.raises(ValueError, match=r"hidden must be a positive integer, got 0"):
        EfficientSE(40, hidden=0)


def test_reference_weights_give_the_reference_features(reference: dict) -> None:
    """The official code's truncated m0.6 (stem, stages 1-2) with random weights: same stage outputs at 1e-5."""
    config = REPVIT_CONFIGS["m0_6"]
    net = RepViTNet(config).eval()
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in from_reference_state_dict(reference["weights"], config).items()}
    assert len(state) == len(reference["weights"])
    loaded = net.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys
    assert {k.split(".")[:2] == ["stages", "0"] or k.startswith(("stem.", "stages.1.")) for k in state} == {True}
    assert all(k.startswith(("stages.2.", "stages.3.")) for k in loaded.missing_keys)  # only the stages left out
    x = reference["input"].float()
    with torch.no_grad():
        got = net(x)[:2]
    for ours, theirs in zip(got, reference["outputs"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    reparameterize_model(net)
    with torch.no_grad():
        fused = net(x)[:2]
    for ours, theirs in zip(fused, reference["outputs"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("key", "ours"), [
    ("features.0.0.c.weight", "stem.0.conv.weight"),
    ("features.0.2.bn.running_var", "stem.1.bn.running_var"),
    ("features.2.token_mixer.0.conv.c.weight", "stages.0.1.token_mixer.0.conv.conv.weight"),
    ("features.3.token_mixer.2.c.weight", "stages.1.0.token_mixer.2.conv.weight"),
    ("features.4.token_mixer.1.fc2.bias", "stages.1.1.token_mixer.1.fc2.bias"),
    ("features.17.channel_mixer.m.2.bn.weight", "stages.3.1.channel_mixer.pw2.bn.weight"),
    ("classifier.classifier.l.weight", None),
])
def test_reference_keys_map_onto_the_network(key: str, ours: str | None) -> None:
    assert reference_key(key, REPVIT_CONFIGS["m0_6"]) == ours


@pytest.mark.parametrize(("key", "match"), [
    ("features.18.token_mixer.0.bn.weight", r"block 18 of the reference is past config 'm0_6''s 17 blocks"),
    ("features.0.1.weight", r"not a key of the reference RepViT's stem"),
    ("head.weight", r"not a key of the reference RepViT: 'head.weight'"),
])
def test_a_key_the_reference_does_not_have_is_refused(key: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reference_key(key, REPVIT_CONFIGS["m0_6"])


def test_outputs_have_the_four_strides_and_the_widths() -> None:
    net = RepViTNet(REPVIT_CONFIGS["m0_6"], width=2.0).eval()
    assert net.channels == (80, 160, 320, 640)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 37, 64))
    assert [tuple(o.shape) for o in out] == [(1, 80, 10, 16), (1, 160, 5, 8), (1, 320, 3, 4), (1, 640, 2, 2)]
    assert RepViTNet(REPVIT_CONFIGS["m0_6"], width=0.3).channels == (16, 24, 48, 96)  # rounded up to 8
    with pytest.raises(ValueError, match=r"width must be a positive number, got 0"):
        RepViTNet(TINY, width=0)


def test_fuse_matches() -> None:
    net = _randomized(TINY)
    x = torch.randn(2, 3, 45, 38)
    out = assert_fuse_matches(net, x)
    assert [o.shape[1] for o in out] == [8, 16, 24, 32]
    assert all(m.groups == m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
               and m.in_channels == m.out_channels and m.stride == (1, 1))  # one depthwise conv per token mixer


def test_every_param_gets_a_gradient() -> None:
    net = _randomized(TINY)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, EfficientSE):
                m.fc1.bias.abs_().add_(1.0)  # no dead ReLU on a small batch (see test_repvit.py)

    class Last(nn.Module):
        def __init__(self, net: RepViTNet):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return sum(o.mean((2, 3)).sum(1) for o in self.net(x))[:, None, None, None]

    assert_every_param_gets_grad(Last(net), torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_low_precision_keeps_dtype_and_matches_float32(dtype: torch.dtype) -> None:
    """As ``test_fuse_dtypes.py`` does for every block: relative error of each stage under ten unit roundoffs."""
    if dtype == torch.float16 and not cpu_float16_conv_works():
        pytest.skip("this torch build has no CPU float16 conv2d")
    net = _randomized(TINY).eval()
    x = torch.randn(2, 3, 33, 29)
    with torch.no_grad():
        ref = net(x)
    low = copy.deepcopy(net).to(dtype)
    assert reparameterize_model(low) > 0 and count_bn(low) == 0
    assert {t.dtype for t in [*low.parameters(), *low.buffers()]} == {dtype}
    with torch.no_grad():
        got = low(x.to(dtype))
    for g, r in zip(got, ref):
        assert g.dtype == dtype
        err = float((g.float() - r).norm() / r.norm())
        assert err < 10 * UNIT_ROUNDOFF[dtype], f"relative error {err:.2e} in {dtype}"


def test_fused_network_exports_one_conv_per_fused_layer(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    net = _randomized(TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    paths = {}
    for fused in (False, True):
        if fused:
            reparameterize_model(net)
        paths[fused] = tmp_path / f"fused{fused}.onnx"
        torch.onnx.export(net, (x,), str(paths[fused]), dynamo=False, input_names=["x"])
    convs = {f: [n.op_type for n in onnx.load(str(p)).graph.node].count("Conv") for f, p in paths.items()}
    assert convs[True] == sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert convs[False] > convs[True]  # unfused: a dw 3x3 and a dw 1x1 per token mixer
    session = ort.InferenceSession(str(paths[True]), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = net(x)
    for got, want in zip(session.run(None, {"x": x.numpy()}), expected):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
