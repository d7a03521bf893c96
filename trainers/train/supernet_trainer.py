"""SPOS training of a one-shot supernet with Ultralytics: one uniformly sampled path per optimizer step.

:class:`SupernetTrainer` is a ``DetectionTrainer`` whose ``get_model`` builds the
:class:`~trainers.model.supernet.SupernetModel` of a :class:`~trainers.model.supernet_spec.SupernetSpec`
(or rebuilds it from the spec recorded in a checkpoint's ``model.yaml``, so ``last.pt`` resumes).
:func:`spos_callbacks` picks the path: before every batch (``on_train_batch_start``, before the
forward pass) it draws one path from a seed derived from (run seed, epoch, batch index) and sets
it on ``trainer.model`` and on the EMA copy ``trainer.ema.ema`` (what Ultralytics validates and
saves). ``nbs`` = ``batch`` makes one batch one optimizer step, so one step trains one path;
AdamW is pinned (``optimizer=auto`` switches optimizers on long schedules). Ultralytics'
per-epoch checkpoint ``last.pt`` is the resume point: :func:`train_supernet` on the same output
folder resumes an unfinished run and returns a finished one's weights without training.

The sampler is the caller's (``sample(rng) -> Architecture``, e.g. :func:`search.space.supernet.sample_path`
bound to the spec): this layer knows the supernet, not how paths are picked. Validation during
training is off (``val=False``): a supernet is scored per subnet, after BN recalibration
(:mod:`trainers.model.recalibrate`). Ultralytics still validates the final epoch, on the current
path of the EMA copy, and ``fuse()`` of the supernet is a no-op, so that leaves it intact.
A path over ``SupernetSettings.max_params`` (the space's ``params_m <= x``, a constraint known before training)
is drawn again from the same generator (:class:`~trainers.model.supernet.PathParams` counts it as its own model
would), so no step trains a path the search would prune. A narrower or shallower path (elastic width and depth)
runs on a skeleton built for it (:mod:`trainers.model.elastic`); the next step's is built in a background thread
while the current step trains.

Multi-GPU (``device="0,1"``): Ultralytics launches one worker process per GPU and rebuilds the trainer there from
what it pickles: the trainer class, its arguments, ``trainer.model`` and ``trainer.callbacks``. So the trainer keeps
the callbacks it is given (the SPOS ones among them) and holds the supernet's ``model.yaml`` dict as ``model``
(the checkpoint path when resuming): every worker builds the same supernet and draws the same path per step (the
seed depends on the step only). Ultralytics wraps the model with ``find_unused_parameters=True`` (unless
``compile``), which a path that leaves most candidates unused needs. Only rank 0 prints progress.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK
from ultralytics.utils import callbacks as ul_callbacks

from trainers.model.architecture import Architecture
from trainers.model.heads import DEFAULT_HEAD
from trainers.model.supernet import (
    PathParams,
    SupernetModel,
    set_path,
    supernet_from_yaml,
    supernet_yaml,
)
from trainers.model.supernet_spec import SupernetSpec
from trainers.model.weight_sharing import SharedWeightsEMA

__all__ = ["PathSampler", "SupernetSettings", "SupernetTrainer", "path_seed", "spos_callbacks", "supernet_spec_of",
           "train_supernet", "trained_supernet"]

PathSampler = Callable[[random.Random], Architecture]
"""Draws one path of the supernet from the given generator (the same generator state, the same path)."""


@dataclass(frozen=True)
class SupernetSettings:
    """How the supernet trains.

    Attributes:
        data: Ultralytics data YAML (absolute path preferred).
        out: the run folder (``weights/last.pt`` is the resume point); never ``runs/``.
        epochs, imgsz, batch: the schedule; one batch is one optimizer step and one path.
        device: ``cpu``, ``0`` / ``cuda:0`` or ``auto``.
        seed: the run seed; paths are drawn from (seed, epoch, batch index).
        head: the head trained for (``nms_free`` or ``nms``).
        lr0: AdamW's initial learning rate.
        max_params: a path with more parameters (as ``build_model`` counts them) is drawn again: a constraint known
            before training (``params_m <= x``), so no step trains a path the search would prune. ``None``: any path.
    """

    data: str
    out: str
    epochs: int = 12
    imgsz: int = 128
    batch: int = 8
    device: str = "cpu"
    seed: int = 0
    head: str = DEFAULT_HEAD
    lr0: float = 0.003
    max_params: int | None = None


MAX_DRAWS = 100  # draws of one step's path before giving up on the parameter bound


class SupernetTrainer(DetectionTrainer):
    """``DetectionTrainer`` of a :class:`SupernetModel`: built from ``spec``, or from the spec in a checkpoint."""

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict[str, Any] | None = None,
                 _callbacks: dict[str, list[Any]] | None = None, *, spec: SupernetSpec | None = None):
        super().__init__(cfg, overrides, _callbacks)
        # the callbacks given (a DDP worker gets the launcher's, SPOS included) or the defaults: never the
        # integration callbacks Ultralytics adds by itself
        self.callbacks = {k: list(v) for k, v in (_callbacks or ul_callbacks.get_default_callbacks()).items()}
        if spec is not None and not str(self.model).lower().endswith(".pt"):  # not resuming from a checkpoint
            self.model = supernet_yaml(spec)  # type: ignore[assignment]  # a model.yaml dict: what a DDP worker builds

    def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> SupernetModel:
        """The supernet of ``cfg`` (the model.yaml dict ``__init__`` made of ``spec``, or a checkpoint's) with the
        dataset's class count; ``weights`` loaded."""
        if not (isinstance(cfg, dict) and "supernet" in cfg):
            raise ValueError("SupernetTrainer needs a spec or a checkpoint whose model.yaml records one")
        model = self.set_model_names_for_load(supernet_from_yaml(cfg, nc=self.data["nc"]))
        if weights:
            model.load(weights)
        return model


def path_seed(seed: int, epoch: int, batch: int) -> random.Random:
    """The generator of the path of batch ``batch`` of epoch ``epoch`` (0-based), the same in every process."""
    return random.Random(f"spos:{seed}:{epoch}:{batch}")  # str seeds go through SHA-512: no hash randomisation


def spos_callbacks(sample: PathSampler, seed: int, paths: list[Architecture] | None = None,
                   label: str = "supernet ", max_params: int | None = None) -> dict[str, Callable[[Any], None]]:
    """Ultralytics callbacks: a path per batch on the model and its EMA copy, a progress line per epoch, and
    the EMA swapped for :class:`~trainers.model.weight_sharing.SharedWeightsEMA` (shared tensors averaged once).

    While a step trains, the next step's path is drawn and prepared (:meth:`SupernetModel.prepare`: an elastic
    path's skeleton built) in a background thread; the path of each step is the same as drawn in line.
    ``paths``: when given, receives every path drawn (tests, statistics). ``max_params``: a path above it is drawn
    again from the same generator (at most :data:`MAX_DRAWS` times; then ``ValueError``).
    """
    state: dict[str, Any] = {"batch": 0, "redrawn": 0, "count": None, "model": None, "ahead": None, "pool": None}
    t0 = time.time()

    def on_pretrain_routine_end(trainer: Any) -> None:
        if getattr(trainer, "ema", None) is not None:  # created (and resumed) by now: average shared tensors once
            trainer.ema = SharedWeightsEMA.adopt(trainer.ema)
        state["model"] = getattr(trainer.model, "module", trainer.model)
        if max_params is not None:
            state["count"] = PathParams(state["model"])

    def draw(rng: random.Random) -> Architecture:
        for _ in range(MAX_DRAWS):
            arch = sample(rng)
            if state["count"] is None or state["count"](arch) <= max_params:
                return arch
            state["redrawn"] += 1
        raise ValueError(f"no path within {max_params} parameters in {MAX_DRAWS} draws: the params_m constraint "
                         "leaves (almost) no path of this supernet")

    def prepared(epoch: int, batch: int) -> Architecture:
        arch = draw(path_seed(seed, epoch, batch))
        if isinstance(state["model"], SupernetModel):
            state["model"].prepare(arch)
        return arch

    def step_path(trainer: Any) -> Architecture:
        """This step's path (prepared ahead when it was the one expected); the next step's starts preparing."""
        here, ahead = (int(trainer.epoch), state["batch"]), state["ahead"]
        arch = ahead[1].result() if ahead is not None and ahead[0] == here else prepared(*here)
        loader = getattr(trainer, "train_loader", None)
        last = loader is not None and here[1] + 1 >= len(loader)
        following = (here[0] + 1, 0) if last else (here[0], here[1] + 1)
        if following[0] >= getattr(trainer, "epochs", following[0] + 1):  # the run's last step: nothing follows
            state["ahead"] = None
            return arch
        if state["pool"] is None:  # created on the first step: the callbacks are pickled (DDP) before it
            state["pool"] = ThreadPoolExecutor(1, thread_name_prefix="spos-next-path")
        state["ahead"] = (following, state["pool"].submit(prepared, *following))
        return arch

    def on_train_epoch_start(trainer: Any) -> None:
        state["batch"] = 0

    def on_train_batch_start(trainer: Any) -> None:
        arch = step_path(trainer)
        state["batch"] += 1
        for model in (trainer.model, getattr(getattr(trainer, "ema", None), "ema", None)):
            if model is not None:
                set_path(getattr(model, "module", model), arch)  # DDP wraps the model in .module
        if paths is not None:
            paths.append(arch)

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch >= trainer.epochs or RANK > 0:  # final_eval re-runs this event; DDP: rank 0 reports
            return
        redrawn = f", {state['redrawn']} drawn again so far (over {max_params} parameters)" if state["redrawn"] else ""
        sys.stderr.write(f"{label}epoch {trainer.epoch + 1}/{trainer.epochs}: {state['batch']} paths trained "
                         f"({time.time() - t0:.0f} s){redrawn}\n")
        sys.stderr.flush()

    def on_train_end(trainer: Any) -> None:
        if state["pool"] is not None:
            state["pool"].shutdown(wait=True, cancel_futures=True)
            state["pool"] = state["ahead"] = None

    return {"on_pretrain_routine_end": on_pretrain_routine_end,
            "on_train_epoch_start": on_train_epoch_start, "on_train_batch_start": on_train_batch_start,
            "on_fit_epoch_end": on_fit_epoch_end, "on_train_end": on_train_end}


def supernet_overrides(settings: SupernetSettings) -> dict[str, Any]:
    """Ultralytics arguments of a supernet run: the trial recipe with one step per batch and no per-epoch val."""
    from trainers.model.heads import ultralytics_nms_arg

    out = Path(settings.out).resolve()
    return {
        "model": "yolo26n.yaml", "data": settings.data, "epochs": settings.epochs, "imgsz": settings.imgsz,
        "batch": settings.batch, "device": settings.device, "project": str(out.parent), "name": out.name,
        "exist_ok": True, "pretrained": False, "plots": False, "workers": 0, "seed": settings.seed,
        "deterministic": False, "verbose": False, "val": False, "close_mosaic": max(1, settings.epochs // 4),
        "warmup_epochs": min(3.0, settings.epochs / 5), "amp": settings.device not in ("cpu", "auto"),
        "nbs": settings.batch, "warmup_bias_lr": 0.0, "optimizer": "AdamW", "lr0": settings.lr0,
        "nms": ultralytics_nms_arg(settings.head),
    }


def trained_supernet(out: str | Path) -> tuple[Path, bool]:
    """``(weights/last.pt, finished)`` of a supernet run folder (``finished``: Ultralytics stripped it, epoch -1)."""
    import torch

    last = Path(out) / "weights" / "last.pt"
    if not last.is_file():
        return last, False
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return last, ckpt.get("epoch", 0) == -1


def train_supernet(spec: SupernetSpec, settings: SupernetSettings, sample: PathSampler) -> Path:
    """Train (or resume, or just find) the supernet of ``spec`` in ``settings.out``; the weights (``last.pt``).

    A folder whose ``last.pt`` is unfinished resumes from it (at most one epoch lost); a finished one
    is returned as it is. The weights are Ultralytics' stripped checkpoint: the EMA supernet in fp16.
    """
    last, finished = trained_supernet(settings.out)
    if finished:
        return last
    overrides = supernet_overrides(settings)
    if last.is_file():
        overrides["resume"] = str(last)
    trainer = SupernetTrainer(overrides=overrides, spec=spec)
    for event, fn in spos_callbacks(sample, settings.seed, max_params=settings.max_params).items():
        trainer.add_callback(event, fn)
    trainer.train()
    return Path(trainer.last)


def supernet_spec_of(weights: str | Path) -> SupernetSpec:
    """The :class:`SupernetSpec` recorded in a supernet checkpoint's ``model.yaml``; ``ValueError`` if none."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt.get("model")
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict) or "supernet" not in cfg:
        raise ValueError("its model.yaml records no supernet")
    return SupernetSpec.from_dict(cfg["supernet"])
