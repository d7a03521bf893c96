"""Squeeze-and-excitation gates: the fixed-width ``EfficientSE`` and the input-adaptive ``DynamicSE``.

Neither is re-parameterizable: the gate is a non-linear, input-dependent function of the
whole feature map (pool -> 1x1 -> ReLU -> 1x1 -> sigmoid -> multiply), so it cannot be folded
into a neighbouring convolution. Both are plain modules with no BatchNorm, so they survive
:func:`blocks.reparameterize_model` unchanged and a sample's output never depends on the
rest of its batch.

Width budget of ``DynamicSE``. With the detection loss alone, nothing tells the ratio predictor
that hidden units cost anything: it stays wide or opens toward ``min_ratio``, never pulled to
``max_ratio``, so ``max_ratio`` hardly matters. We price width in the loss (a "width cost", not once-for-all
training): :class:`SEWidthTracker` collects each ``DynamicSE``'s mean active width / widest
during training forwards, and the trainer adds ``lambda`` times their mean to the loss
(:mod:`trainers.model.se_budget`). Why not once-for-all (a ratio sampled per step, one width fixed at
export): it would drop the input-adaptive predictor this module exists for, and fixing one
width at export is what a ``fixed`` SE with a searched ``reduction`` already is; weight sharing
across widths pays off over many sub-networks of one supernet, not in the one short training
of each trial. A width cost keeps the module as it is (``lambda = 0`` is exactly the training
without it), and makes ``max_ratio`` the floor the cost pushes the width toward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blocks._fuse import check_positive
from blocks.registry import SE_KINDS

__all__ = ["DynamicSE", "EfficientSE", "SEFactory", "SEWidthTracker", "se_hidden_channels"]


def se_hidden_channels(c: int, reduction: int) -> int:
    """Hidden width of an SE with ``c`` channels and reduction ``reduction``: ``max(1, c // reduction)``.

    Exact integer floor division, no rounding to a multiple of 8 (RepViT rounds with
    ``make_divisible(c / r, 8)``; we keep the width the search asked for).
    """
    return max(1, c // reduction)


def _check_ratio_le_c(value: int, c: int, name: str) -> int:
    """Return ``value`` if it is a positive integer no larger than ``c``, else raise ``ValueError``."""
    check_positive(value, name)
    if value > c:
        raise ValueError(f"{name} must be a positive integer <= c ({c}), got {value!r}")
    return value


class EfficientSE(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., 2018) as used in RepViT's token mixer.

    ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convolutions (with bias) and a
    hidden width of ``max(1, c // reduction)`` (see :func:`se_hidden_channels`).

    Not re-parameterizable: the gate is non-linear and depends on the input, so it has no
    fused form and is left as is by :func:`blocks.reparameterize_model`.

    Args:
        c: channels in and out.
        reduction: channel reduction of the hidden layer, a positive integer ``<= c``.
        hidden: the hidden width itself, overriding ``c // reduction`` (the RepViT backbone gives
            the paper's ``make_divisible(c / 4, 8)``: :func:`blocks.repvit_backbone.repvit_se`).
    """

    def __init__(self, c: int, reduction: int = 4, hidden: int | None = None):
        super().__init__()
        check_positive(c, "c")
        _check_ratio_le_c(reduction, c, "reduction")
        self.c = c
        self.reduction = reduction
        hidden = se_hidden_channels(c, reduction) if hidden is None else check_positive(hidden, "hidden")
        self.fc1 = nn.Conv2d(c, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, c, 1, bias=True)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-channel gate in (0, 1), shape ``(B, c, 1, 1)``."""
        s = F.adaptive_avg_pool2d(x, 1)
        return torch.sigmoid(self.fc2(self.act(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale every channel of ``x`` by its gate."""
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"c={self.c}, reduction={self.reduction}, hidden={self.fc1.out_channels}"


class DynamicSE(nn.Module):
    """SE whose reduction ratio is predicted per sample within ``[min_ratio, max_ratio]``.

    The hidden layer is built at its widest, ``H = c // min_ratio`` units. A tiny predictor
    (a 1x1 conv ``c -> 1`` on the pooled descriptor, then a sigmoid ``p`` in (0, 1)) gives
    every sample an active hidden width

        ``h = h_min + (H - h_min) * p``,  ``h_min = min(H, max(1, c / max_ratio))``,

    i.e. an effective reduction ``r = c / h`` in ``[c / H, c / h_min]``. That is
    ``[min_ratio, max_ratio]`` exactly when ``min_ratio`` divides ``c`` and
    ``c >= max_ratio``, and a sub-range of it otherwise, except for tiny ``c`` where the
    clamps bite: at least one hidden unit always stays active, and at most ``H`` exist.
    Hidden unit ``j`` (0-based) is scaled by the soft mask

        ``m_j = sigmoid(temperature * (h - j - 0.5))``,

    close to 1 for the first ``h`` units and to 0 after them. The mask is smooth in ``h``,
    so the predictor receives a gradient through it (a hard ``round``/``.item()`` would give
    it none).

    Everything is computed per sample with static shapes: no BatchNorm, no ``.item()``, no
    host synchronisation and no data-dependent control flow, so a sample's output does
    not depend on its batch, the module exports to ONNX and can be captured in a CUDA graph.

    Cost: it always computes the widest hidden layer and masks it, so it saves **no**
    inference FLOPs compared with an ``EfficientSE(c, min_ratio)`` (it adds the predictor).
    What it buys is input-adaptive capacity and a regularizing bottleneck. Not
    re-parameterizable (non-linear, input-dependent): left as is when a model is fused.

    Width budget: trained on the task loss alone, nothing pulls the width below ``H``. While a
    :class:`SEWidthTracker` is attached (``width_records`` is its list), every training-mode
    forward appends the batch's mean active width fraction ``mean(h) / H`` (a scalar tensor in
    the graph, float32) for a width cost in the loss; otherwise nothing is recorded and the
    forward is unchanged. Eval-mode forwards (validation, export) never record, and a pickled or
    deep-copied module (a checkpoint, an EMA copy) is not tracked.

    Args:
        c: channels in and out.
        min_ratio: smallest reduction (widest hidden layer), a positive integer ``<= c``.
        max_ratio: largest reduction, an integer ``> min_ratio``.
        temperature: sharpness of the soft mask, ``> 0`` (larger is closer to a hard mask).
    """

    unit_centers: torch.Tensor
    width_records: list[torch.Tensor] | None = None
    """The list of the attached :class:`SEWidthTracker`, or ``None`` (not tracked)."""

    def __init__(self, c: int, min_ratio: int = 4, max_ratio: int = 16, temperature: float = 4.0):
        super().__init__()
        check_positive(c, "c")
        _check_ratio_le_c(min_ratio, c, "min_ratio")
        check_positive(max_ratio, "max_ratio")
        if max_ratio <= min_ratio:
            raise ValueError(f"max_ratio must be greater than min_ratio ({min_ratio}), got {max_ratio!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.c = c
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.temperature = float(temperature)
        self.hidden = c // min_ratio
        self.h_min = min(float(self.hidden), max(1.0, c / max_ratio))
        self.fc1 = nn.Conv2d(c, self.hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(self.hidden, c, 1, bias=True)
        self.ratio_predictor = nn.Conv2d(c, 1, 1, bias=True)
        # j + 0.5 for hidden unit j; derived from the shape, so not saved in the state_dict.
        centers = torch.arange(self.hidden, dtype=torch.float32).add_(0.5).reshape(1, -1, 1, 1)
        self.register_buffer("unit_centers", centers, persistent=False)

    def active_width(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-sample active hidden width ``h`` in ``[h_min, H]``, shape ``(B, 1, 1, 1)``."""
        p = torch.sigmoid(self.ratio_predictor(pooled))
        return self.h_min + (self.hidden - self.h_min) * p

    def hidden_mask(self, width: torch.Tensor) -> torch.Tensor:
        """Soft mask over the ``H`` hidden units for widths ``width``, shape ``(B, H, 1, 1)``."""
        return torch.sigmoid((width - self.unit_centers.to(width.dtype)) * self.temperature)

    def ratio(self, x: torch.Tensor) -> torch.Tensor:
        """Effective per-sample reduction ratio ``c / h``, shape ``(B,)`` (for logging/regularizers)."""
        return self.c / self.active_width(F.adaptive_avg_pool2d(x, 1)).flatten()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-channel gate in (0, 1), shape ``(B, c, 1, 1)``."""
        s = F.adaptive_avg_pool2d(x, 1)
        width = self.active_width(s)
        if self.width_records is not None and self.training:
            self.width_records.append(width.float().mean() / self.hidden)
        hidden = self.act(self.fc1(s)) * self.hidden_mask(width)
        return torch.sigmoid(self.fc2(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale every channel of ``x`` by its gate."""
        return x * self.gate(x)

    def __getstate__(self) -> dict[str, object]:
        """Pickle and ``deepcopy`` state: a copy of a tracked module is not tracked (an EMA copy records nothing)."""
        state = dict(super().__getstate__())
        state.pop("width_records", None)
        return state

    def extra_repr(self) -> str:
        return (
            f"c={self.c}, min_ratio={self.min_ratio}, max_ratio={self.max_ratio}, "
            f"hidden={self.hidden}, temperature={self.temperature}"
        )


@dataclass(frozen=True)
class SEFactory:
    """Builds the SE a stage asked for, for a given channel count: ``factory(channels) -> nn.Module``.

    Plain frozen data, so it is hashable, comparable and picklable (a block's ``se_module``
    argument, see :class:`blocks.repvit.RepViTBlock`). Ratios larger than the channel count
    are clamped to it (hidden width >= 1), so a reduction that suits wide stages does not
    break the narrowest ones:

    - ``"fixed"``: ``EfficientSE(channels, reduction=min(reduction, channels))``.
    - ``"dynamic"``: ``hi = min(max_ratio, channels)``, ``lo = min(min_ratio, hi - 1)``
      (``1`` when ``hi == 1``); ``DynamicSE(channels, lo, hi)``, or ``EfficientSE(channels,
      lo)`` when no range is left (``lo >= hi``, i.e. a single channel).

    Attributes:
        kind: one of :data:`blocks.registry.SE_KINDS` (``"fixed"`` or ``"dynamic"``).
        reduction: reduction of the fixed SE.
        min_ratio: smallest reduction of the dynamic SE.
        max_ratio: largest reduction of the dynamic SE.
    """

    kind: str = "fixed"
    reduction: int = 4
    min_ratio: int = 4
    max_ratio: int = 16

    def __post_init__(self) -> None:
        if self.kind not in SE_KINDS:
            raise ValueError(f"kind must be one of {list(SE_KINDS)}, got {self.kind!r}")

    def __call__(self, channels: int) -> nn.Module:
        """The SE module for ``channels`` channels."""
        if self.kind == "fixed":
            return EfficientSE(channels, reduction=min(self.reduction, channels))
        hi = min(self.max_ratio, channels)
        lo = min(self.min_ratio, hi - 1) if hi > 1 else 1
        if lo >= hi:
            return EfficientSE(channels, reduction=lo)
        return DynamicSE(channels, min_ratio=lo, max_ratio=hi)


class SEWidthTracker:
    """Collects the active width fraction of every :class:`DynamicSE` in a model, for a width cost.

    Attaching sets each module's ``width_records`` to this tracker's one list; each
    training-mode forward of a module then appends ``mean(h) / H`` over its batch (see
    :class:`DynamicSE`). :meth:`take` returns the mean over what was recorded since the last
    call (each module call weighs the same, whatever its size: the cost is about the ratio the
    search asked for, not FLOPs, which a ``DynamicSE`` does not save) and empties the list, so
    no graph outlives its step. :meth:`close` (or leaving the ``with`` block) detaches.

    Args:
        model: the model whose ``DynamicSE`` modules are tracked (the modules present now).
    """

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, DynamicSE)]
        self.records: list[torch.Tensor] = []
        for m in self.modules:
            m.width_records = self.records

    def __len__(self) -> int:
        """The number of tracked ``DynamicSE`` modules."""
        return len(self.modules)

    def take(self) -> torch.Tensor | None:
        """Mean width fraction (scalar, in ``(0, 1]``, with its graph) of the forwards since the last call; ``None``
        when none was recorded. Empties the records."""
        if not self.records:
            return None
        mean = torch.stack(self.records).mean()
        self.records.clear()
        return mean

    def close(self) -> None:
        """Detach from the modules (they record nothing afterwards) and drop the records."""
        for m in self.modules:
            if m.width_records is self.records:
                del m.width_records  # back to the class default, None
        self.records.clear()

    def __enter__(self) -> SEWidthTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
