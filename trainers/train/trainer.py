"""The Ultralytics trainer of a trial: builds our architecture, carries only the callbacks we choose.

:class:`ArchitectureTrainer` is a ``DetectionTrainer`` whose ``get_model`` builds the
architecture (given, or recorded in a checkpoint's ``yaml``), never a pretrained model.
Integration callbacks Ultralytics attaches from its settings (Ray Tune, loggers) are dropped;
:func:`trial_callbacks` adds ours: fail fast on a non-finite loss, per-epoch mAP, progress on
stderr (a line for people and an :class:`~trainers.train.results.EpochProgress` line for the search),
a shared device lock while an epoch trains.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import callbacks as ul_callbacks

from trainers.model.architecture import Architecture
from trainers.model.build import build_model, model_from_yaml
from trainers.train.device_lock import SharedDeviceLock
from trainers.train.results import EpochProgress

MAP_KEY = "metrics/mAP50-95(B)"
MAP50_KEY = "metrics/mAP50(B)"


class NonFiniteLoss(Exception):
    """Training produced a NaN or Inf loss; raised at the first such batch."""


class ArchitectureTrainer(DetectionTrainer):
    """``DetectionTrainer`` that trains :attr:`architecture` (or the one in a checkpoint's yaml).

    ``model``: the architecture already built (with the dataset's class count) by the caller,
    so a trial builds its model once; otherwise :meth:`get_model` builds it.
    ``se_width_cost``: lambda of the DynamicSE width cost in the loss (:mod:`trainers.model.se_budget`);
    ``0`` trains on the stock loss.
    """

    architecture: Architecture | None = None

    def __init__(self, *args: Any, architecture: Architecture | None = None, model: Any = None,
                 se_width_cost: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.architecture = architecture
        self.prebuilt = model
        self.callbacks = ul_callbacks.get_default_callbacks()  # no integration callbacks by accident
        self.se_width_cost = se_width_cost
        if se_width_cost > 0:
            from trainers.model.se_budget import se_width_cost_callbacks

            for event, fn in se_width_cost_callbacks(se_width_cost).items():
                self.add_callback(event, fn)

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
        """The architecture with the dataset's class count (the prebuilt one when it fits); ``weights`` loaded."""
        nc = self.data["nc"]
        if self.prebuilt is not None and int(self.prebuilt.yaml.get("nc", -1)) == nc:
            model, self.prebuilt = self.prebuilt, None
        elif self.architecture is not None:
            model = build_model(self.architecture, nc=nc)
        else:
            model = model_from_yaml(cfg, nc=nc)
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model


def seed_as_the_trainer_will(seed: int) -> None:
    """Seed the RNGs exactly as the trainer's ``__init__`` does for ``seed``.

    A trial builds its model before the trainer exists (one build, reused by :meth:`get_model`);
    seeding first gives that model the initial weights the trainer itself would have built.
    """
    from ultralytics.utils import RANK
    from ultralytics.utils.torch_utils import init_seeds

    init_seeds(seed + 1 + RANK, deterministic=False)


def trial_callbacks(device: str, epochs_log: list[dict[str, float]], label: str = "",
                    nan_at_batch: int | None = None) -> dict[str, Callable[[Any], None]]:
    """Our callbacks, by Ultralytics event name.

    ``epochs_log`` receives ``{"epoch", "map50_95", "map50", "seconds"}`` per epoch.
    ``nan_at_batch`` is fault injection for tests: poison the weights before that batch.
    """
    lock = SharedDeviceLock(device)
    state = {"batch": 0, "t0": time.time()}

    def on_train_epoch_start(trainer: Any) -> None:
        lock.acquire()

    def on_train_batch_start(trainer: Any) -> None:
        state["batch"] += 1
        if nan_at_batch is not None and state["batch"] == nan_at_batch:
            first = next(p for p in trainer.model.parameters() if p.dtype.is_floating_point)
            first.data.fill_(float("nan"))

    def on_train_batch_end(trainer: Any) -> None:
        loss = trainer.loss
        if loss is not None and not bool(loss.detach().isfinite().all()):
            lock.release()
            raise NonFiniteLoss(f"non-finite loss {float(loss.detach().sum())} at epoch {trainer.epoch + 1}, "
                                f"batch {state['batch']}")

    def on_fit_epoch_end(trainer: Any) -> None:
        lock.release()  # held from the epoch's start through its validation
        metrics = trainer.metrics or {}
        if trainer.epoch >= trainer.epochs:  # final_eval re-runs this event for best.pt
            return
        row = {"epoch": trainer.epoch + 1, "map50_95": float(metrics.get(MAP_KEY, math.nan)),
               "map50": float(metrics.get(MAP50_KEY, math.nan)), "seconds": round(time.time() - state["t0"], 1)}
        epochs_log.append(row)
        count = torch.get_num_threads() if trainer.device.type == "cpu" else 0
        threads = f", {count} thread(s)" if count else ""
        line = (f"{label}epoch {row['epoch']}/{trainer.epochs} mAP50-95 {row['map50_95']:.3f} "
                f"({row['seconds']:.0f} s{threads})\n")
        progress = EpochProgress(int(row["epoch"]), int(trainer.epochs), row["map50_95"], row["map50"], row["seconds"],
                                 count)
        # the fd itself (Ultralytics may swap sys.stderr); the machine line is what a search's rungs read
        os.write(sys.stderr.fileno(), (line + progress.to_line()).encode())

    def on_train_end(trainer: Any) -> None:
        lock.release()

    return {
        "on_train_epoch_start": on_train_epoch_start,
        "on_train_batch_start": on_train_batch_start,
        "on_train_batch_end": on_train_batch_end,
        "on_fit_epoch_end": on_fit_epoch_end,
        "on_train_end": on_train_end,
    }
