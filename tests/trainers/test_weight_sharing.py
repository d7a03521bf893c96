"""Weight sharing rules (trainers/model/weight_sharing.py) on small modules; the EMA averaging a shared tensor once."""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.utils.torch_utils import ModelEMA

from trainers.model.weight_sharing import SharedWeightsEMA, share_within_families


def _candidate(stride: int = 1, extra: int = 0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(4, 4, 3, stride, 1), nn.BatchNorm2d(4)]
    if extra:
        layers.append(nn.Conv2d(4, 4, 1, groups=extra))
    return nn.Sequential(*layers)


def test_same_place_type_shape_and_settings_share_within_a_family() -> None:
    cands = {"a": _candidate(), "b": _candidate(extra=1), "c": _candidate(stride=2), "d": _candidate(),
             "e": _candidate()}
    tied = share_within_families(cands, ["F", "F", "F", "F", "G"])
    assert cands["a"][0] is cands["b"][0] is cands["d"][0] and cands["a"][1] is cands["c"][1]
    assert cands["c"][0] is not cands["a"][0]  # stride 2: another computation, its own weights
    assert cands["e"][0] is not cands["a"][0] and cands["e"][1] is not cands["a"][1]  # another family
    assert tied == 5  # b: conv, bn; c: bn; d: conv, bn


def test_multi_branch_layers_tie_by_branch_order_never_within_one_candidate() -> None:
    def multi(n: int) -> nn.Module:
        m = nn.Module()
        m.branches = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(n))
        return m

    single, two, three = nn.Sequential(nn.BatchNorm2d(4)), nn.Sequential(multi(2)), nn.Sequential(multi(3))
    share_within_families({"s": single, "t": two, "u": three}, ["F"] * 3)
    assert two[0].branches[0] is single[0] is three[0].branches[0]
    assert two[0].branches[1] is three[0].branches[1] is not single[0]
    assert len({id(b) for b in three[0].branches}) == 3


def test_shared_weights_ema_averages_a_shared_tensor_once() -> None:
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    model = nn.ModuleDict({"a": shared, "b": shared, "c": nn.Linear(3, 3)})
    ours, theirs = SharedWeightsEMA.adopt(ModelEMA(model)), ModelEMA(model)
    start = ours.ema["a"].weight.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ours.update(model)
    theirs.update(model)
    d = ours.decay(1)
    torch.testing.assert_close(ours.ema["a"].weight, d * start + (1 - d) * model["a"].weight)
    torch.testing.assert_close(ours.ema["c"].weight, theirs.ema["c"].weight)
    assert ours.ema["a"] is ours.ema["b"]
    assert not torch.allclose(theirs.ema["a"].weight, ours.ema["a"].weight)  # the stock EMA averages it twice
