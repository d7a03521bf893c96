"""Tests for blocks/se.py: EfficientSE and DynamicSE (shapes, widths, gradients, batch
independence, serialisation, no host sync, ONNX export), SEWidthTracker and SEFactory."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from _helpers import randomize_
from torch import nn

import blocks
from blocks._fuse import reparameterize_model
from blocks.se import DynamicSE, EfficientSE, SEFactory, SEWidthTracker, se_hidden_channels

SE_KINDS = {
    "efficient": lambda c: EfficientSE(c, reduction=4),
    "dynamic": lambda c: DynamicSE(c, min_ratio=2, max_ratio=8),
}


def _make(kind: str, c: int) -> nn.Module:
    torch.manual_seed(0)
    return randomize_(SE_KINDS[kind](c))


# --- EfficientSE ------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "r", "hidden"), [(16, 4, 4), (13, 4, 3), (3, 3, 1), (7, 1, 7), (5, 4, 1)])
def test_efficient_se_hidden_width_is_floor_division(c: int, r: int, hidden: int) -> None:
    se = EfficientSE(c, reduction=r)
    assert se_hidden_channels(c, r) == hidden
    assert se.fc1.out_channels == hidden and se.fc2.in_channels == hidden
    assert se.fc1.in_channels == c and se.fc2.out_channels == c


def test_efficient_se_matches_reference_formula() -> None:
    se = _make("efficient", 13).eval()
    x = torch.randn(2, 13, 5, 7)
    s = x.mean((2, 3), keepdim=True)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(s))))
    torch.testing.assert_close(se(x), x * gate)
    assert se(x).shape == x.shape


@pytest.mark.parametrize("bad", [0, -1, 17, 2.0, True, None])
def test_efficient_se_rejects_bad_reduction(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"reduction must be a positive integer.*got {bad!r}"):
        EfficientSE(16, reduction=bad)  # type: ignore[arg-type]


# --- DynamicSE --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_ratio": 0}, r"min_ratio must be a positive integer.*got 0"),
        ({"min_ratio": 2.5}, r"min_ratio must be a positive integer.*got 2\.5"),
        ({"min_ratio": 17}, r"min_ratio must be a positive integer <= c \(16\), got 17"),
        ({"min_ratio": 4, "max_ratio": 4}, r"max_ratio must be greater than min_ratio \(4\), got 4"),
        ({"min_ratio": 8, "max_ratio": 2}, r"max_ratio must be greater than min_ratio \(8\), got 2"),
        ({"max_ratio": 0}, r"max_ratio must be a positive integer, got 0"),
        ({"temperature": 0.0}, r"temperature must be > 0, got 0\.0"),
    ],
)
def test_dynamic_se_rejects_bad_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicSE(16, **kwargs)


def test_dynamic_se_ratio_stays_in_range_and_follows_predictor() -> None:
    se = DynamicSE(32, min_ratio=4, max_ratio=16)
    assert se.hidden == 8 and se.h_min == 2.0
    x = torch.randn(6, 32, 4, 4)
    with torch.no_grad():
        se.ratio_predictor.bias.fill_(30.0)  # p -> 1: widest hidden layer
        torch.testing.assert_close(se.ratio(x), torch.full((6,), 4.0))
        se.ratio_predictor.bias.fill_(-30.0)  # p -> 0: narrowest
        torch.testing.assert_close(se.ratio(x), torch.full((6,), 16.0))
        randomize_(se)
        r = se.ratio(x * 3)
    assert r.shape == (6,)
    assert bool(((r >= 4.0) & (r <= 16.0)).all())
    assert r.std() > 0, "ratio should vary per sample"


def test_dynamic_se_ratio_range_when_c_smaller_than_max_ratio() -> None:
    se = DynamicSE(8, min_ratio=2, max_ratio=16)  # c / max_ratio = 0.5 -> at least one unit
    assert se.hidden == 4 and se.h_min == 1.0
    with torch.no_grad():
        se.ratio_predictor.bias.fill_(-30.0)
        torch.testing.assert_close(se.ratio(torch.randn(1, 8, 3, 3)), torch.tensor([8.0]))


def test_dynamic_se_soft_mask_selects_first_h_units() -> None:
    se = DynamicSE(32, min_ratio=4, max_ratio=16, temperature=8.0)
    width = torch.tensor([2.0, 5.0, 8.0]).reshape(3, 1, 1, 1)
    mask = se.hidden_mask(width).flatten(1)
    assert mask.shape == (3, 8)
    on = torch.arange(8).add(0.5) < width.flatten(1)
    assert torch.equal(mask > 0.5, on)
    assert bool((mask[on] > 0.98).all()) and bool((mask[~on] < 0.02).all())
    assert bool((mask[:, 1:] <= mask[:, :-1]).all()), "mask must be non-increasing in the unit index"


def test_dynamic_se_predictor_receives_gradient() -> None:
    se = _make("dynamic", 16).train()
    x = torch.randn(3, 16, 5, 7, requires_grad=True)
    se(x).square().sum().backward()
    for name in ("weight", "bias"):
        g = getattr(se.ratio_predictor, name).grad
        assert g is not None and g.abs().sum() > 0, f"ratio_predictor.{name} got no gradient"


def test_dynamic_se_output_depends_on_predicted_width() -> None:
    se = _make("dynamic", 16).eval()
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        se.ratio_predictor.bias.fill_(30.0)
        wide = se(x)
        se.ratio_predictor.bias.fill_(-30.0)
        narrow = se(x)
    assert not torch.allclose(wide, narrow)


def test_dynamic_se_runs_on_meta_device_so_it_never_syncs_with_host() -> None:
    """``.item()``/``bool(tensor)`` raise on meta tensors, so this proves no host sync."""
    se = DynamicSE(16, min_ratio=2, max_ratio=8).to("meta")
    out = se(torch.empty(4, 16, 13, 17, device="meta"))
    assert out.shape == (4, 16, 13, 17) and out.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dynamic_se_cuda_graph_replay_matches_eager() -> None:
    se = _make("dynamic", 16).cuda().eval()
    static_x = torch.randn(4, 16, 13, 17, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(2):
            se(static_x)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = se(static_x)
    new_x = torch.randn_like(static_x)
    static_x.copy_(new_x)
    graph.replay()
    with torch.no_grad():
        torch.testing.assert_close(static_out, se(new_x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated
@pytest.mark.parametrize("tracked", [False, True])
def test_dynamic_se_onnx_export_matches_onnxruntime(tmp_path, tracked: bool) -> None:
    """Exports in eval mode, also while an :class:`SEWidthTracker` is attached (it then records nothing)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    se = _make("dynamic", 16).eval()
    x = torch.randn(3, 16, 13, 17)
    path = tmp_path / "dse.onnx"
    with SEWidthTracker(se if tracked else nn.Identity()) as tracker:
        torch.onnx.export(
            se, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17,
        )
        assert tracker.records == []
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, torch.randn(5, 16, 13, 17)):
        (got,) = sess.run(None, {"x": batch.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), se(batch), rtol=1e-4, atol=1e-5)


# --- SEWidthTracker ---------------------------------------------------------------------


def _width_fraction(se: DynamicSE, x: torch.Tensor) -> torch.Tensor:
    return se.active_width(torch.nn.functional.adaptive_avg_pool2d(x, 1)).mean() / se.hidden


def test_tracker_records_mean_width_fraction_of_training_forwards() -> None:
    a, b = DynamicSE(16, min_ratio=2, max_ratio=8), DynamicSE(8, min_ratio=2, max_ratio=4)
    randomize_(a)
    model = nn.Sequential(a, EfficientSE(16), nn.Conv2d(16, 8, 1), b).train()
    x = torch.randn(3, 16, 5, 4)
    with SEWidthTracker(model) as tracker:
        assert len(tracker) == 2 and a.width_records is tracker.records is b.width_records
        y = model(x)
        with torch.no_grad():  # the reference in eval mode, which records nothing
            expected = (_width_fraction(a, x) + _width_fraction(b, model[:3].eval()(x))) / 2
        fraction = tracker.take()
        assert fraction is not None and fraction.requires_grad and fraction.dtype == torch.float32
        torch.testing.assert_close(fraction, expected)
        assert tracker.records == [] and tracker.take() is None, "take() empties the records"
        fraction.backward()
        assert a.ratio_predictor.weight.grad is not None and a.ratio_predictor.weight.grad.abs().sum() > 0
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), y.detach())
        assert tracker.take() is None, "eval-mode forwards record nothing"
        model.train()
    assert "width_records" not in vars(a) and a.width_records is None and b.width_records is None
    model(x)
    assert tracker.records == [], "a closed tracker records nothing"


def test_untracked_dynamic_se_is_unchanged_and_pickles() -> None:
    se = _make("dynamic", 12).train()
    x = torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        ref = se(x)
        with SEWidthTracker(se):
            torch.testing.assert_close(se(x), ref)  # recording does not change the output
    assert se.width_records is None
    assert pickle.loads(pickle.dumps(se)).width_records is None


def test_copies_of_a_tracked_dynamic_se_are_not_tracked() -> None:
    """An EMA copy or a checkpoint made while training is tracked must not record into a list nobody empties."""
    se = _make("dynamic", 12).train()
    x = torch.randn(2, 12, 4, 4)
    with SEWidthTracker(se) as tracker:
        for clone in (copy.deepcopy(se), pickle.loads(pickle.dumps(se))):
            assert clone.width_records is None and "width_records" not in vars(clone)
            with torch.no_grad():
                torch.testing.assert_close(clone.train()(x), se(x))
        assert len(tracker.records) == 2, "only the tracked original recorded"


def test_tracker_of_a_model_without_dynamic_se_takes_nothing() -> None:
    model = nn.Sequential(EfficientSE(8)).train()
    with SEWidthTracker(model) as tracker:
        model(torch.randn(1, 8, 3, 3))
        assert len(tracker) == 0 and tracker.take() is None


# --- both kinds -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SE_KINDS))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sample_output_does_not_depend_on_batch(kind: str, mode: str) -> None:
    se = _make(kind, 12).train(mode == "train")
    x = torch.randn(4, 12, 13, 17)
    with torch.no_grad():
        batched = se(x)
        for i in range(x.shape[0]):
            torch.testing.assert_close(se(x[i : i + 1]), batched[i : i + 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(SE_KINDS))
def test_gradients_reach_every_parameter(kind: str) -> None:
    se = _make(kind, 12).train()
    x = torch.randn(3, 12, 6, 5, requires_grad=True)
    se(x).square().sum().backward()
    for name, p in se.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(SE_KINDS))
def test_state_dict_and_pickle_round_trip(kind: str) -> None:
    se = _make(kind, 12).eval()
    x = torch.randn(2, 12, 5, 3)
    with torch.no_grad():
        ref = se(x)
    fresh = SE_KINDS[kind](12).eval()
    buf = io.BytesIO()
    torch.save(se.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    clone = pickle.loads(pickle.dumps(se))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref)
        torch.testing.assert_close(clone(x), ref)
    assert type(clone) is type(se)


@pytest.mark.parametrize("kind", sorted(SE_KINDS))
def test_se_is_not_reparameterized(kind: str) -> None:
    """SE is non-linear, so the walker leaves it (and its output) untouched."""
    se = _make(kind, 12).eval()
    x = torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        ref = se(x)
        assert reparameterize_model(se) == 0
        torch.testing.assert_close(se(x), ref)
    assert not hasattr(se, "reparameterize")


# --- SEFactory --------------------------------------------------------------------------


@pytest.mark.parametrize(("reduction", "c", "hidden"), [(4, 16, 4), (8, 12, 1), (16, 8, 1), (4, 1, 1)])
def test_se_factory_fixed_clamps_the_reduction_to_the_channels(reduction: int, c: int, hidden: int) -> None:
    se = SEFactory("fixed", reduction=reduction)(c)
    assert type(se) is EfficientSE
    assert se.c == c and se.reduction == min(reduction, c) and se.fc1.out_channels == hidden


@pytest.mark.parametrize(
    ("c", "lo", "hi"),
    [(64, 4, 16), (8, 4, 8), (4, 3, 4), (2, 1, 2)],  # hi = min(16, c); lo = min(4, hi - 1)
)
def test_se_factory_dynamic_clamps_the_ratio_range(c: int, lo: int, hi: int) -> None:
    se = SEFactory("dynamic", min_ratio=4, max_ratio=16)(c)
    assert type(se) is DynamicSE
    assert (se.c, se.min_ratio, se.max_ratio) == (c, lo, hi)


def test_se_factory_dynamic_on_one_channel_falls_back_to_a_fixed_se() -> None:
    se = SEFactory("dynamic")(1)
    assert type(se) is EfficientSE and se.c == 1 and se.reduction == 1


def test_se_factory_defaults_pickling_and_export() -> None:
    factory = SEFactory("dynamic", 8, 2, 6)
    assert SEFactory() == SEFactory("fixed", 4, 4, 16)
    assert blocks.SEFactory is SEFactory
    clone = pickle.loads(pickle.dumps(factory))
    assert clone == factory and hash(clone) == hash(factory)
    assert (clone(12).min_ratio, clone(12).max_ratio) == (2, 6)
    with pytest.raises(AttributeError):
        factory.kind = "fixed"  # type: ignore[misc]


def test_se_factory_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of \['fixed', 'dynamic'\], got 'dyn'"):
        SEFactory("dyn")
