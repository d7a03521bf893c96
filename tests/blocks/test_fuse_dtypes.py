"""Fusing a half-precision model keeps its dtype: every block, bfloat16 and float16, on CPU.

Each block is built and randomized in float32 and its float32 output is the reference; a
deep copy is cast to the low-precision dtype and fused as a whole with
``blocks.reparameterize_model`` (containers and leaves together, children first, the way a
model is fused). Every parameter and buffer must keep the dtype and the fused forward must run
in it. Folding happens in float32 inside the fuse; only the final cast rounds.

Tolerance: relative error of the whole output, ``||y - ref|| / ||ref||``, below ten times the
dtype's unit roundoff ``u`` (bfloat16 ``2**-8``: 3.9e-2; float16 ``2**-11``: 4.9e-3). Every
rounded step (the input, the fused weights, each layer's output) adds an error of about ``u``;
the deepest block here (a ``C3k2_RVB_SE`` with two RepViT blocks and an SE) chains about ten
of them and measures about ``3u``, the same as the *unfused* model run in that dtype. A
wrong fold (a lost branch, an unfolded BatchNorm) gives an error of order 1.
"""

from __future__ import annotations

import copy
import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from _helpers import EVERY_BLOCK, count_bn, randomize_

from blocks import reparameterize_model

UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
DTYPES = [pytest.param(torch.bfloat16, id="bfloat16"), pytest.param(torch.float16, id="float16")]


@functools.cache
def cpu_float16_conv_works() -> bool:
    """Whether this torch build runs a float16 ``conv2d`` on CPU (checked once, on a tiny conv)."""
    try:
        x = torch.ones(1, 1, 3, 3, dtype=torch.float16)
        w = torch.ones(1, 1, 3, 3, dtype=torch.float16)
        return F.conv2d(x, w, torch.zeros(1, dtype=torch.float16), padding=1).dtype == torch.float16
    except RuntimeError:
        return False


def _relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).norm() / ref.norm())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(EVERY_BLOCK))
def test_fused_low_precision_block_keeps_dtype_and_matches_float32(name: str, dtype: torch.dtype) -> None:
    if dtype == torch.float16 and not cpu_float16_conv_works():
        pytest.skip("this torch build has no CPU float16 conv2d")
    factory, c = EVERY_BLOCK[name]
    block = randomize_(factory()).eval()
    x = torch.randn(2, c, 13, 17)
    with torch.no_grad():
        ref = block(x)
    low = copy.deepcopy(block).to(dtype)
    assert reparameterize_model(low) > 0
    assert count_bn(low) == 0
    for tname, tensor in itertools.chain(low.named_parameters(), low.named_buffers()):
        assert tensor.dtype == dtype, f"{tname} is {tensor.dtype} after fusing a {dtype} model"
    with torch.no_grad():
        got = low(x.to(dtype))
    assert got.dtype == dtype and got.shape == ref.shape
    err = _relative_error(got, ref)
    assert err < 10 * UNIT_ROUNDOFF[dtype], f"relative error {err:.2e} in {dtype}"


def test_bfloat16_conv_runs_on_cpu() -> None:
    """bfloat16 is never skipped: the test above must really run it on this machine."""
    x = torch.ones(1, 1, 3, 3, dtype=torch.bfloat16)
    assert F.conv2d(x, x, padding=1).dtype == torch.bfloat16
