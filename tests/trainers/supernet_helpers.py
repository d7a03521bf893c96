"""Helpers of the supernet tests: select a path with realistic BatchNorm statistics, compare outputs and fuses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.trainers.build_helpers import randomize_bn_, tensors_in
from trainers.model.architecture import Architecture
from trainers.model.supernet import SupernetModel, set_path

IMGSZ = 64


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output tensor of ``model(x)``, without gradients."""
    with torch.no_grad():
        return list(tensors_in(model(x)))


def on_path(supernet: SupernetModel, arch: Architecture, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Select ``arch`` with randomized BN statistics; return an input and the supernet's outputs (eval mode).

    The path's BatchNorms are randomized on its extracted subnet (statistics measured on the path itself, variances
    at least 0.05) and written back into the supernet's tensors (leading slices for a narrower or shallower path).
    """
    from trainers.model.extract import extract
    from trainers.model.supernet import path_state_dict

    gen = torch.Generator().manual_seed(seed)
    set_path(supernet, arch)
    sub = randomize_bn_(extract(supernet, arch), torch.rand(4, 3, IMGSZ, IMGSZ, generator=gen), seed)
    for m in sub.modules():  # a channel nearly constant on 4 images would make the fused float32 kernel huge
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.clamp_(min=0.05)
    mine = path_state_dict(supernet, arch)
    with torch.no_grad():
        for key, value in sub.state_dict().items():
            mine[key].copy_(value)
    supernet.eval()
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=gen)
    return x, outputs(supernet, x)


def assert_fused_close(fused: Any, x: torch.Tensor, truth: torch.Tensor, unfused: torch.Tensor) -> None:
    """As close to the float64 result as the unfused float32 model is (build_helpers' rule), and within 1e-3 of the
    output's scale (a wrong fuse is off by the order of the scale; randomized statistics on a deep, RepConv-headed
    path can leave even the unfused float32 model 1e-4 of the scale from float64)."""
    got = fused(x)[0].double() if isinstance(fused, nn.Module) else fused.double()
    scale = float(truth.abs().max())
    unfused_err = float((unfused.double() - truth).abs().max())
    err = float((got - truth).abs().max())
    assert err <= 10 * unfused_err + 1e-6 * scale, (err, unfused_err, scale)
    assert err <= 1e-3 * scale, (err, scale)


def assert_extracts_as_build_model(supernet: SupernetModel, arch: Architecture, x: torch.Tensor,
                                   want: list[torch.Tensor], nc: int) -> None:
    """``extract`` gives ``build_model(arch)`` in eval mode whose outputs are ``want`` (the supernet's on ``x``),
    as does a fresh ``build_model(arch)`` loaded with its state dict; its fuse removes every BatchNorm and matches."""
    import copy

    from trainers.model.build import architecture_of, build_model
    from trainers.model.extract import extract

    sub = extract(supernet, arch)
    assert type(sub).__name__ == "RepDetectionModel" and architecture_of(sub) == arch and not sub.training
    got = outputs(sub, x)
    assert len(got) == len(want) >= 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    fresh = build_model(arch, nc=nc)
    fresh.load_state_dict(sub.state_dict(), strict=True)
    for g, w in zip(outputs(fresh.eval(), x), want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    with torch.no_grad():
        truth = copy.deepcopy(sub).double()(x.double())[0]
        fused = copy.deepcopy(sub).fuse(verbose=False, imgsz=IMGSZ)
        assert not [m for m in fused.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert_fused_close(fused, x, truth, want[0])
