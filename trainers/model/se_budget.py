"""The width cost of dynamic SE gates in a trial's training loss (``train.se_width_cost``, lambda).

A ``DynamicSE`` trained on the detection loss alone keeps its hidden layer wide (nothing pulls
it toward ``max_ratio``), so its ``max_ratio`` hardly matters (see :mod:`blocks.se`). With
``lambda > 0`` the loss a trial trains on becomes

    ``detection loss + lambda * batch size * mean active width / widest``

where the mean is over every ``DynamicSE`` call of the step (each module counts once, a
:class:`blocks.se.SEWidthTracker`). Ultralytics' detection loss is a per-image loss times the
batch size, so ``lambda`` is in per-image loss units: ``lambda = 1`` makes a fully open gate
cost as much as one unit of (gain-weighted) box + cls + dfl loss per image. The loss items the
trainer logs (box, cls, dfl) and the validation loss are unchanged; only the summed loss that
is back-propagated carries the cost. ``lambda = 0`` installs nothing: the training is exactly
the stock one.

How it enters Ultralytics: ``BaseModel.loss`` calls ``model.criterion`` (built lazily by
``init_criterion``); :class:`SEWidthCost` wraps that criterion and is set on the training
model by a trainer callback at ``on_train_start`` (after the EMA copy, after a resume set its
own criterion) and taken off at ``on_train_end``. The trainer strips ``criterion`` from every
checkpoint it saves, so no checkpoint carries it; the architecture and ``build_model`` are
untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from blocks.se import SEWidthTracker

__all__ = ["SEWidthCost", "install_se_width_cost", "remove_se_width_cost", "se_width_cost_callbacks"]


class SEWidthCost:
    """A training criterion: ``inner(preds, batch)`` plus ``weight * batch size * mean width fraction``.

    Returns ``(loss, items)`` like the criterion it wraps, ``loss`` summed to a scalar (the
    trainer sums it anyway) and ``items`` unchanged. Every other attribute (``update``, the
    ProgLoss schedule of YOLO26's ``E2ELoss``, ...) is the inner criterion's, so the trainer's
    ``hasattr(criterion, "update")`` sees what it would without the wrapper.

    Args:
        model: the model whose ``DynamicSE`` modules are priced; its ``init_criterion()`` builds
            ``inner`` at the first call when none is given (when Ultralytics would).
        weight: lambda, ``> 0``.
        inner: the criterion to wrap, or ``None``.

    Attributes:
        last_fraction: the mean width fraction of the last step (detached), ``None`` before one.
    """

    def __init__(self, model: nn.Module, weight: float, inner: Any = None):
        self.model = model
        self.weight = float(weight)
        self.inner = inner
        self.tracker = SEWidthTracker(model)
        self.last_fraction: torch.Tensor | None = None

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """The inner loss summed, plus the width cost of the forward that made ``preds``."""
        if self.inner is None:
            self.inner = self.model.init_criterion()  # type: ignore[operator]
        loss, items = self.inner(preds, batch)
        fraction = self.tracker.take()
        if fraction is None:  # an eval-mode forward: nothing recorded, nothing to price
            return loss, items
        self.last_fraction = fraction.detach()
        return loss.sum() + self.weight * batch["img"].shape[0] * fraction.to(loss.dtype), items

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def install_se_width_cost(model: nn.Module, weight: float) -> SEWidthCost | None:
    """Wrap ``model.criterion`` (built or not) in a :class:`SEWidthCost`; ``None`` (nothing done) when ``weight`` is 0
    or the model has no ``DynamicSE``."""
    if weight <= 0:
        return None
    if isinstance(getattr(model, "criterion", None), SEWidthCost):  # installed already
        return model.criterion  # type: ignore[return-value]
    cost = SEWidthCost(model, weight, inner=getattr(model, "criterion", None))
    if not len(cost.tracker):
        cost.tracker.close()
        return None
    model.criterion = cost  # type: ignore[assignment]
    return cost


def remove_se_width_cost(model: nn.Module) -> None:
    """Undo :func:`install_se_width_cost`: the inner criterion back on ``model``, the tracker detached."""
    cost = getattr(model, "criterion", None)
    if isinstance(cost, SEWidthCost):
        cost.tracker.close()
        model.criterion = cost.inner


def trained_student(trainer: Any) -> nn.Module:
    """The model a trainer trains: unwrapped from DDP, and the student when it distills from a teacher."""
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(trainer.model)
    return getattr(model, "student_model", model)


def se_width_cost_callbacks(weight: float) -> dict[str, Callable[[Any], None]]:
    """Ultralytics trainer callbacks, by event name, that price DynamicSE width with ``weight`` during training.

    With a teacher the cost is installed on the student only (a frozen teacher's widths cost nothing).
    """

    def on_train_start(trainer: Any) -> None:
        install_se_width_cost(trained_student(trainer), weight)

    def on_train_end(trainer: Any) -> None:
        remove_se_width_cost(trained_student(trainer))

    return {"on_train_start": on_train_start, "on_train_end": on_train_end}
