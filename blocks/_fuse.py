"""Shared arithmetic of every fuse: conv+BN folding, kernel padding, identity kernels.

Every re-parameterizable block in this package builds its inference form from these
helpers, so the folding rule lives in exactly one place. All folding is done in float32
(folding in fp16 loses precision); callers cast afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBN",
    "Reparameterizable",
    "check_conv_args",
    "check_groups",
    "check_odd_kernel",
    "check_positive",
    "fold_bn",
    "identity_kernel",
    "pad_kernel",
]


def check_odd_kernel(k: int, name: str = "k") -> int:
    """Return ``k`` if it is a positive odd integer, else raise ``ValueError`` naming ``name``."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (1, 3, 5, ...), got {k!r}")
    return k


def check_positive(value: int, name: str) -> int:
    """Return ``value`` if it is a positive integer, else raise ``ValueError`` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_groups(c1: int, c2: int, g: int) -> None:
    """Raise ``ValueError`` unless both channel counts are divisible by the group count ``g``."""
    check_positive(g, "g")
    if c1 % g or c2 % g:
        raise ValueError(f"g must divide c1 and c2 (c1={c1}, c2={c2}), got g={g}")


def check_conv_args(c1: int, c2: int, k: int, s: int, g: int) -> None:
    """Validate a conv block's channels, odd kernel, stride and groups (``ValueError`` naming the argument)."""
    check_positive(c1, "c1")
    check_positive(c2, "c2")
    check_odd_kernel(k, "k")
    check_positive(s, "s")
    check_groups(c1, c2, g)


def fold_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv into that conv's weight and bias.

    ``y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta`` becomes a conv with
    weight ``w * gamma / std`` and bias ``beta + (b - mean) * gamma / std``.
    Computed in float32 and returned in float32.
    """
    w = weight.detach().float()
    b = torch.zeros(w.shape[0], device=w.device) if bias is None else bias.detach().float()
    assert bn.running_var is not None and bn.running_mean is not None, "BatchNorm without running stats"
    std = (bn.running_var.float() + bn.eps).sqrt()
    gamma = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return w * scale.reshape(-1, 1, 1, 1), beta + (b - bn.running_mean.float()) * scale


def pad_kernel(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a square odd kernel to size ``k`` x ``k``, centred (padding ``(k - k0) // 2``)."""
    k0 = int(weight.shape[-1])  # int(): under ONNX tracing a shape entry is a tensor
    check_odd_kernel(k0, "kernel size")
    check_odd_kernel(k, "target kernel size")
    if k0 > k:
        raise ValueError(f"target kernel size must be >= {k0}, got {k}")
    p = (k - k0) // 2
    return F.pad(weight, [p, p, p, p])


def identity_kernel(channels: int, groups: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """Conv weight of shape ``(channels, channels // groups, k, k)`` that maps x to x."""
    check_odd_kernel(k, "k")
    cin = channels // groups
    w = torch.zeros(channels, cin, k, k, device=device)
    idx = torch.arange(channels, device=device)
    w[idx, idx % cin, k // 2, k // 2] = 1.0
    return w


class Reparameterizable(nn.Module):
    """Base of every block with a training form and a fused inference form.

    Subclasses implement :meth:`reparameterize`, which turns the module into its inference
    form in place and returns ``True``, or returns ``False`` when it is already fused
    (a second call changes nothing). ``forward`` picks its path by whether the fused
    layer exists, never by a global flag.
    """

    def reparameterize(self) -> bool:  # pragma: no cover - abstract
        """Fuse in place; return whether anything changed."""
        raise NotImplementedError


class ConvBN(Reparameterizable):
    """Conv (no bias) + BatchNorm + optional activation; fuses into one conv with bias.

    Args:
        c1: input channels.
        c2: output channels.
        k: odd kernel size; padding is ``k // 2``.
        s: stride.
        g: groups (must divide ``c1`` and ``c2``).
        act: activation module, or ``None`` for identity.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: nn.Module | None = None):
        super().__init__()
        check_odd_kernel(k, "k")
        check_positive(s, "s")
        check_groups(c1, c2, g)
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, BN (unless fused) and the activation."""
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the single conv equivalent to conv+BN (eval-mode BN), in float32."""
        if self.bn is None:
            w = self.conv.weight.detach().float()
            b = self.conv.bias.detach().float() if self.conv.bias is not None else torch.zeros(w.shape[0])
            return w, b.to(w.device)
        return fold_bn(self.conv.weight, self.conv.bias, self.bn)

    def reparameterize(self) -> bool:
        """Fold the BatchNorm into the conv; ``False`` if already folded."""
        if self.bn is None:
            return False
        w, b = self.fused_weight_bias()
        conv = self.conv
        fused = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0],  # type: ignore[index]
            groups=conv.groups, bias=True,
        ).to(conv.weight.device)
        fused.weight.data.copy_(w.to(fused.weight.dtype))
        assert fused.bias is not None
        fused.bias.data.copy_(b.to(fused.bias.dtype))
        self.conv = fused
        self.bn = None
        return True


def reparameterize_model(model: nn.Module) -> int:
    """Fuse every :class:`Reparameterizable` module of ``model`` in place, children first.

    Works on any ``nn.Module`` (an Ultralytics ``DetectionModel`` included) and composes
    with Ultralytics' own ``model.fuse()`` in either order: Ultralytics fuses its own
    ``Conv`` layers, this walker fuses ours. Returns how many modules changed (0 on a second
    call). The model should be in ``eval()`` mode for the result to match.
    """
    count = 0
    for child in list(model.children()):
        count += reparameterize_model(child)
    if isinstance(model, Reparameterizable) and model.reparameterize():
        count += 1
    return count
