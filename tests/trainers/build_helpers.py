"""Helpers of the build tests: walk model outputs, randomize BatchNorm statistics, train-and-fuse checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from trainers.deploy.inference import count_params, fused_copy
from trainers.model.architecture import Architecture
from trainers.model.build import architecture_of, build_model


def tensors_in(out: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a model output (tensors, nested dicts, lists and tuples)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from tensors_in(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from tensors_in(v)


def shapes_of(out: Any) -> Any:
    """The structure of a model output with every tensor replaced by its shape."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: shapes_of(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [shapes_of(v) for v in out]
    return type(out).__name__


def randomize_bn_(model: nn.Module, calibration: torch.Tensor, seed: int) -> nn.Module:
    """Random BatchNorm affine parameters, then running statistics measured on ``calibration``; in place.

    Fresh BatchNorms (mean 0, var 1, weight 1, bias 0) can hide a wrong fuse, and with them the
    activations of a freshly initialised detector shrink with depth until its output no longer
    depends on the input. Statistics measured on a batch (cumulative average, ``momentum=None``)
    are far from 0/1 and keep every layer's output at unit scale. Conv weights are untouched
    (``tests/blocks``' ``randomize_`` redraws them, fine for one block, not for 23 layers).
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        model(calibration)
    for m in bns:
        m.momentum = 0.03
    return model.eval()


def module_types(model: nn.Module) -> set[str]:
    """The class names of every module inside ``model``."""
    return {type(m).__name__ for m in model.modules()}


def assert_trains_and_fuses(arch: Architecture, imgsz: int, nc: int = 3) -> None:
    """``arch`` builds, every parameter gets a finite gradient, and its fused copy computes the same outputs.

    The fused copy (BN statistics randomized first) must be as close to the float64 result as
    the unfused float32 model is, hold no BatchNorm and fewer parameters, and leave the model as it was.
    """
    torch.manual_seed(0)
    model = build_model(arch, nc=nc)
    assert architecture_of(model) == arch
    x = torch.rand(2, 3, imgsz, imgsz)

    model.train()
    found = list(tensors_in(model(x)))
    assert len(found) >= 4
    torch.stack([t.float().sum() for t in found]).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"

    randomize_bn_(model, torch.rand(4, 3, imgsz, imgsz), seed=int(arch.hash, 16) % 2**31)
    assert not model.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)[0]
        exact = copy.deepcopy(model).double()(x.double())[0]
    fused = fused_copy(model)
    with torch.no_grad():
        got = fused(x)[0]
    cells = sum((imgsz // s) ** 2 for s in (8, 16, 32))
    assert got.shape == expected.shape == (2, 4 + nc, cells)
    scale = float(exact.abs().max())
    assert float((exact[0] - exact[1]).abs().max()) > 1e-2 * scale  # the output depends on the input
    # Float32 rounding alone moves the unfused output by up to ~1e-4 of its scale (boxes reach ~1e3
    # pixels once the BN statistics are real): the fused copy must be as close to the float64
    # result as the unfused float32 model is. A wrong fuse is off by a sizeable part of the scale.
    unfused_err = float((expected.double() - exact).abs().max())
    fused_err = float((got.double() - exact).abs().max())
    assert fused_err <= 10 * unfused_err + 1e-6 * scale, (fused_err, unfused_err, scale)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * scale)
    assert not [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert count_params(fused) < count_params(model)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()), "fused_copy changed the model"
