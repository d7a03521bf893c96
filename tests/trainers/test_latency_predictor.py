"""The latency cost model (:mod:`trainers.latency.predictor`) and the graph features it reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.latency.features import GraphFeatures, graph_features, op_family
from trainers.latency.predictor import CostModel, TargetConditions, UnseenOperator, fit_cost_model

CONDITIONS = TargetConditions("torch", "2.14.1", "cpu (x86_64, 2 cores)", "float32", 1, 320, 1, "nms_free",
                              "2.14.1", "x86_64")


def _graph(values: dict[str, float], ops: tuple[str, ...] = ("convolution.default", "add.Tensor")) -> GraphFeatures:
    return GraphFeatures(tuple(sorted(values.items())), frozenset(ops), frozenset())


def test_a_fit_recovers_a_known_non_negative_cost_model() -> None:
    gen = torch.Generator().manual_seed(0)
    graphs, ratios = [], []
    for _ in range(40):
        macs, calls, elems = (float(v) for v in torch.rand(3, generator=gen) * torch.tensor([100.0, 50.0, 10.0]))
        graphs.append(_graph({"conv_dense_k3_macs": macs, "conv_dense_k3_calls": calls, "elementwise_elems": elems}))
        ratios.append(0.2 + 0.005 * macs + 0.01 * calls + 0.0 * elems)
    model = fit_cost_model(graphs, ratios, CONDITIONS, stock_ms=10.0)
    weights = dict(zip(model.features, model.weights))
    assert weights["conv_dense_k3_macs"] == pytest.approx(0.005, rel=1e-4)
    assert weights["conv_dense_k3_calls"] == pytest.approx(0.01, rel=1e-4)
    assert weights["elementwise_elems"] == pytest.approx(0.0, abs=1e-6) and model.intercept == pytest.approx(0.2)
    assert all(w >= 0 for w in model.weights)
    assert model.predict_ms(graphs[0]) == pytest.approx(10.0 * ratios[0], rel=1e-4)


def test_a_fit_with_fewer_architectures_than_coefficients_is_refused() -> None:
    graphs = [_graph({"a": 1.0, "b": 2.0, "c": float(i)}) for i in range(4)]
    with pytest.raises(ValueError, match="more architectures than coefficients \\(4\\), got 4"):
        fit_cost_model(graphs, [1.0] * 4, CONDITIONS, stock_ms=1.0)


def test_another_target_or_an_unseen_operator_is_refused_never_guessed(tmp_path: Path) -> None:
    graphs = [_graph({"conv_dense_k3_macs": float(i)}) for i in range(5)]
    model = fit_cost_model(graphs, [1.0 + i for i in range(5)], CONDITIONS, stock_ms=2.0)
    again = CostModel.load(model.save(tmp_path / "m.json"))
    assert again == model and again.model_id == model.model_id
    again.check_target(CONDITIONS)
    with pytest.raises(ValueError, match=r"fit for another target \(imgsz: model 320, asked 640\)"):
        again.check_target(replace(CONDITIONS, imgsz=640))
    with pytest.raises(UnseenOperator, match="never saw: gelu.default"):
        again.predict_ratio(_graph({"conv_dense_k3_macs": 1.0}, ("convolution.default", "gelu.default")))
    with pytest.raises(UnseenOperator, match="never saw: conv_dw_k7_macs"):
        again.predict_ratio(_graph({"conv_dense_k3_macs": 1.0, "conv_dw_k7_macs": 3.0}))
    (tmp_path / "old.json").write_text('{"version": 0}')
    with pytest.raises(ValueError, match="format version 0, this tool reads 1"):
        CostModel.load(tmp_path / "old.json")


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.silu(self.dense(x))
        return self.pw(self.dw(y) + y)


def test_features_count_each_convolution_by_kind_and_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainers.latency.backends as backends

    monkeypatch.setattr(backends, "deployed_copy", lambda model, head: model.eval())
    f = graph_features(_Tiny(), 16, "nms_free").as_dict()
    px = 16 * 16
    assert f["conv_dense_k3_macs"] == pytest.approx(px * 8 * 3 * 9 / 1e6)
    assert f["conv_dw_k5_macs"] == pytest.approx(px * 8 * 1 * 25 / 1e6)
    assert f["conv_pw_k1_macs"] == pytest.approx(px * 4 * 8 / 1e6)
    assert f["conv_dense_k3_calls"] == f["conv_dw_k5_calls"] == f["conv_pw_k1_calls"] == 1.0
    assert f["elementwise_calls"] == 2.0 and f["elementwise_elems"] == pytest.approx(2 * px * 8 / 1e6)
    assert op_family("convolution.default") == "convolution" and op_family("weird_op.default") is None


def test_a_fused_rep_block_is_seen_as_the_convolutions_it_became() -> None:
    from trainers.model.architecture import Architecture, StageChoice
    from trainers.model.build import build_model

    stock = graph_features(build_model(Architecture.baseline(), nc=3), 64, "nms_free")
    rep = graph_features(build_model(Architecture.create({"p3_backbone": StageChoice(block="RepViT",
                                                                                      kernels=(3, 5))}), nc=3),
                         64, "nms_free")
    assert not stock.unknown and not rep.unknown
    assert "conv_dw_k5_macs" in rep.as_dict() and "conv_dw_k5_macs" not in stock.as_dict()  # 3+5 fused into one 5x5
    assert "conv_dw_k3_macs" not in rep.as_dict() or rep.as_dict()["conv_dw_k3_calls"] == stock.as_dict().get(
        "conv_dw_k3_calls")


@pytest.mark.parametrize("head", ["nms_free", "nms"])
def test_shape_only_features_equal_the_computed_ones(head: str) -> None:
    from trainers.latency.backends import deployed_copy
    from trainers.latency.features import count_operators, merge
    from trainers.model.architecture import Architecture, StageChoice
    from trainers.model.build import build_model
    from trainers.model.heads import DeployedDetector

    arch = Architecture.create({"p4_backbone": StageChoice(block="C3k2_RVB_SE", se="in_blocks", se_kind="dynamic",
                                                           kernels=(3, 5, 7), downsample="OREPA")})
    for a in (Architecture.baseline(), arch):
        model = build_model(a, nc=3)
        computed = merge(count_operators(DeployedDetector(deployed_copy(model, head), head), 96, "cpu"))
        assert graph_features(model, 96, head) == computed
        if head == "nms_free":  # the NMS head's nonzero() has no shape-only form: graph_features computes it
            meta = merge(count_operators(DeployedDetector(deployed_copy(model, head).to("meta"), head), 96, "meta"))
            assert meta == computed
        assert computed.as_dict()["conv_dense_k3_calls"] > 0
