"""Shared arithmetic of every fuse: conv+BN folding, kernel padding, identity kernels, the fused conv.

Every re-parameterizable block in this package builds its inference form from these
helpers, so the folding rule lives in exactly one place. All folding is done in float32
(folding in fp16 loses precision); :func:`conv_from_weight_bias` casts once, at the end, to
the dtype of the module being fused. Fusing is refused in training mode
(:func:`check_fusable`), where BatchNorm does not compute what a fold assumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBN",
    "OneConvReparameterizable",
    "Reparameterizable",
    "check_conv_args",
    "check_fusable",
    "check_groups",
    "check_kernel_set",
    "check_odd_kernel",
    "check_positive",
    "conv_from_weight_bias",
    "conv_weight_bias",
    "fold_bn",
    "fuse_children",
    "identity_kernel",
    "pad_kernel",
    "reparameterize_model",
]


def _is_positive_odd_int(k: object) -> bool:
    """Whether ``k`` is an ``int`` (not a ``bool``) that is positive and odd."""
    return isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1


def check_odd_kernel(k: int, name: str = "k") -> int:
    """Return ``k`` if it is a positive odd integer, else raise ``ValueError`` naming ``name``."""
    if not _is_positive_odd_int(k):
        raise ValueError(f"{name} must be a positive odd integer (1, 3, 5, ...), got {k!r}")
    return k


def check_kernel_set(kernels: Sequence[int], name: str = "kernels") -> tuple[int, ...]:
    """Return ``kernels`` as a tuple if it is a non-empty sequence of distinct positive odd integers.

    Raises ``ValueError`` naming ``name``, the rule that is broken and the value given.
    """
    if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence) or len(kernels) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of distinct positive odd integers, got {kernels!r}")
    values = tuple(kernels)
    for k in values:
        if not _is_positive_odd_int(k):
            raise ValueError(f"{name} must hold only positive odd integers (1, 3, 5, ...), got {k!r} in {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a kernel size, got {values!r}")
    return values


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


def conv_from_weight_bias(
    weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, dtype: torch.dtype
) -> nn.Conv2d:
    """A new ``nn.Conv2d`` (padding ``k // 2``, with bias) holding ``weight`` and ``bias``.

    The conv is created on ``weight``'s device with parameters of ``dtype``: callers fold in
    float32 and pass the dtype of the module being fused, so the cast happens once, here.
    """
    c2, cin_per_group, k, _ = weight.shape
    conv = nn.Conv2d(
        cin_per_group * groups, c2, k, stride, k // 2, groups=groups, bias=True,
        device=weight.device, dtype=dtype,
    )
    assert conv.bias is not None
    with torch.no_grad():
        conv.weight.copy_(weight.to(dtype))
        conv.bias.copy_(bias.to(dtype))
    return conv


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
    layer exists, never by a global flag. A block that holds its own fused layer overrides
    :meth:`is_fused`; the default suits a container whose fusing is all in its children.
    """

    def reparameterize(self) -> bool:  # pragma: no cover - abstract
        """Fuse in place; return whether anything changed.

        Raises ``RuntimeError`` (see :func:`check_fusable`) when something is left to fuse and
        the module, or one below it, is in training mode; an already-fused module returns
        ``False`` in either mode.
        """
        raise NotImplementedError

    def is_fused(self) -> bool:
        """Whether :meth:`reparameterize` has nothing left to do (default: every such module below is fused)."""
        return all(m.is_fused() for m in self.modules() if isinstance(m, Reparameterizable) and m is not self)


def check_fusable(module: nn.Module) -> None:
    """Raise ``RuntimeError`` if ``module`` or a re-parameterizable module below it would fuse in training mode.

    In training mode BatchNorm normalizes with the statistics of the current batch, while a
    fold uses the running statistics, so fusing would silently change the output. Modules
    with nothing left to fuse (:meth:`Reparameterizable.is_fused`) are ignored, so fusing an
    already-fused model stays a no-op in either mode.
    """
    for m in module.modules():
        if isinstance(m, Reparameterizable) and m.training and not m.is_fused():
            raise RuntimeError(
                f"reparameterize: {type(m).__name__} is in training mode; call model.eval() before fusing "
                "(in training mode BatchNorm uses batch statistics, which a fused conv cannot reproduce)"
            )


def conv_weight_bias(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 weight and bias (zeros when the conv has none) of a plain conv."""
    w = conv.weight.detach().float()
    if conv.bias is None:
        return w, torch.zeros(w.shape[0], device=w.device)
    return w, conv.bias.detach().float()


class OneConvReparameterizable(Reparameterizable):
    """A block whose inference form is ONE conv with bias, held in ``self.fused`` (``None`` until fused).

    Subclasses give the float32 weight and bias of their branches (:meth:`branch_weight_bias`),
    the stride and groups of the fused conv, the dtype of their parameters and how to drop the
    branches; :meth:`reparameterize` is the same for all of them: fold in float32, cast once.
    """

    fused: nn.Conv2d | None

    def branch_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Float32 weight and bias of the one conv equal to the branches (eval-mode BN)."""
        raise NotImplementedError

    def fused_stride_groups(self) -> tuple[int, int]:  # pragma: no cover - abstract
        """Stride and groups of the fused conv."""
        raise NotImplementedError

    def branch_dtype(self) -> torch.dtype:  # pragma: no cover - abstract
        """The dtype of the branches' parameters (the fused conv gets it)."""
        raise NotImplementedError

    def drop_branches(self) -> None:  # pragma: no cover - abstract
        """Remove the training-form branches (after the fused conv exists)."""
        raise NotImplementedError

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 weight and bias of the single conv equal to the block (its fused conv's, once fused)."""
        if self.fused is not None:
            return conv_weight_bias(self.fused)
        with torch.no_grad():
            return self.branch_weight_bias()

    def is_fused(self) -> bool:
        """Whether the fused conv has replaced the branches."""
        return self.fused is not None

    def reparameterize(self) -> bool:
        """Replace the branches by one conv with bias (same device and dtype); ``False`` if already fused."""
        if self.is_fused():
            return False
        check_fusable(self)
        dtype = self.branch_dtype()
        w, b = self.fused_weight_bias()
        self.fused = conv_from_weight_bias(w, b, *self.fused_stride_groups(), dtype)
        self.drop_branches()
        return True


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
            return conv_weight_bias(self.conv)
        return fold_bn(self.conv.weight, self.conv.bias, self.bn)

    def is_fused(self) -> bool:
        """Whether the BatchNorm is already folded into the conv."""
        return self.bn is None

    def reparameterize(self) -> bool:
        """Fold the BatchNorm into the conv (same device and dtype); ``False`` if already folded."""
        if self.is_fused():
            return False
        check_fusable(self)
        w, b = self.fused_weight_bias()
        conv = self.conv
        self.conv = conv_from_weight_bias(w, b, conv.stride[0], conv.groups, conv.weight.dtype)
        self.bn = None
        return True


def fuse_children(module: nn.Module) -> int:
    """Fuse every :class:`Reparameterizable` strictly below ``module``, children first; how many changed.

    No mode check: callers run :func:`check_fusable` first, once, so a refusal leaves the
    model untouched.
    """
    count = 0
    for child in list(module.children()):
        count += fuse_children(child)
        if isinstance(child, Reparameterizable) and child.reparameterize():
            count += 1
    return count


def reparameterize_model(model: nn.Module) -> int:
    """Fuse every :class:`Reparameterizable` module of ``model`` in place, children first.

    Works on any ``nn.Module`` (an Ultralytics ``DetectionModel`` included) and composes
    with Ultralytics' own ``model.fuse()`` in either order: Ultralytics fuses its own
    ``Conv`` layers, this walker fuses ours. Returns how many modules changed (0 on a second
    call). Raises ``RuntimeError`` before changing anything if a module that still has
    something to fuse is in training mode (call ``model.eval()`` first).
    """
    check_fusable(model)
    count = fuse_children(model)
    if isinstance(model, Reparameterizable) and model.reparameterize():
        count += 1
    return count
