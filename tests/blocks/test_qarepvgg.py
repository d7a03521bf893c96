"""QARepConv (blocks/qarepvgg.py): the QARepVGG structure (BN only on the kxk branch and after the sum) and its math.

Its fuse is proven with every other block (tests/blocks/test_fuse*.py, test_onnx.py via EVERY_BLOCK).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _helpers import randomize_
from torch import nn

from blocks import QARepConv, RepConv


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_bn_sits_after_the_sum_not_on_the_1x1_or_identity_branch() -> None:
    qa, rep = QARepConv(8, 8, 3), RepConv(8, 8, 3)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in qa.modules()) == 2  # kxk's own and the one after the sum
    assert sum(isinstance(m, nn.BatchNorm2d) for m in rep.modules()) == 3  # kxk, 1x1, identity: one each
    assert qa.conv_1x1 is not None and qa.conv_1x1.bias is None and qa.identity
    assert not QARepConv(8, 16, 3, 2).identity  # no identity across a stride or a channel change


def test_forward_is_act_of_bn_of_the_branch_sum() -> None:
    block = randomize_(QARepConv(6, 6, 3, act=nn.ReLU())).eval()
    x = torch.randn(2, 6, 9, 9)
    assert block.conv_kxk is not None and block.conv_1x1 is not None and block.bn is not None
    kxk = _bn(F.conv2d(x, block.conv_kxk.conv.weight, padding=1), block.conv_kxk.bn)
    want = torch.relu(_bn(kxk + F.conv2d(x, block.conv_1x1.weight) + x, block.bn))
    with torch.no_grad():
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)
        block.reparameterize()
        assert block.bn is None and block.fused is not None and block.fused.kernel_size == (3, 3)
        torch.testing.assert_close(block(x), want, rtol=1e-4, atol=1e-4)
