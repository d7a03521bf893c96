"""One trial end to end: build the architecture once, train it with Ultralytics, validate, report.

``run_trial(arch, settings, pre_training) -> TrialResult | TrialFailure``. The figures known
before training (params, GFLOPs, latency) come from the caller when it measured them (a
search's parent process, through the trial's job file); otherwise they are measured here, on
the same untrained model that then trains. Nothing gets a made-up score: a build error, an
out-of-memory error, a non-finite loss (caught at its first batch) or any other exception
comes back as a :class:`TrialFailure` with its reason.

CLI (stdout: one JSON line, the result)::

    python -m trainers.train.trial --job TRIAL.json          # what a search runs (see trainers.train.results.TrialJob)
    python -m trainers.train.trial --arch ARCH.json --data DATA.yaml --epochs E --imgsz S [--batch B]
                             [--device cpu|0] [--out DIR] [--latency-imgsz S] [--latency-device D] ...
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainers.cli import (
    OneLineParser,
    device_arg,
    emit_json,
    existing_file,
    fail,
    log,
    non_negative_float,
    positive_int,
)
from trainers.latency.setting import BACKEND_NAMES, DEFAULT_CALIB_IMAGES, DTYPES, LatencySetting
from trainers.model.architecture import Architecture, read_architecture
from trainers.model.heads import DEFAULT_HEAD, HEADS
from trainers.train.results import FailKind, PreTraining, TrialFailure, TrialJob, TrialResult, TrialSettings
from trainers.train.threads import cpu_threads, thread_count_arg


def measure_pre_training(model: Any, arch_hash: str, settings: TrialSettings) -> PreTraining:
    """Params, GFLOPs and latency (cached per setting) of an untrained model, as ``settings`` asks."""
    from trainers.deploy.inference import count_params, gflops
    from trainers.latency.measure import LatencyCache, measure_model_latency

    cache = LatencyCache(settings.latency_cache) if settings.latency_cache else None
    params, flops = count_params(model), round(gflops(model, settings.latency.imgsz), 4)
    if settings.latency_source != "measured" and settings.latency_model:
        from trainers.latency.predictor import UnseenOperator, load_cached, predicted_report

        try:
            return PreTraining(params, flops, predicted_report(model, settings.latency,
                                                               load_cached(settings.latency_model)))
        except UnseenOperator as e:  # never a silent guess: measured, and the record says why
            report, cached = measure_model_latency(model, arch_hash, settings.latency, cache=cache)
            return PreTraining(params, flops, replace(report, post=f"{report.post}; measured: {e}"), cached)
    report, cached = measure_model_latency(model, arch_hash, settings.latency, cache=cache)
    return PreTraining(params, flops, report, cached)


def _failure_of(exc: BaseException, arch_hash: str) -> TrialFailure:
    from trainers.train.trainer import NonFiniteLoss

    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, NonFiniteLoss):
        return TrialFailure(FailKind.NAN, str(exc), arch_hash)
    if "out of memory" in str(exc).lower():
        return TrialFailure(FailKind.OOM, text[:500], arch_hash)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return TrialFailure(FailKind.ERROR, (text + where)[:500], arch_hash)


def trial_overrides(arch: Architecture, settings: TrialSettings, out: Path, device: str) -> dict[str, Any]:
    """Ultralytics arguments of a trial: a short-schedule recipe on top of Ultralytics' defaults.

    A search trains each candidate for a few epochs, so: AdamW at lr0 0.003 (Ultralytics' ``auto``
    picks about 0.001 for 5 classes, too slow for 12 epochs), an optimizer step every batch
    (``nbs`` = batch; the default 64 accumulates several batches per step, leaving few steps), no
    warm-up bias learning rate, a short warm-up, and mosaic closed for the last quarter. Validation
    scores the pinned head (``nms=False`` selects the one-to-one head, ``None`` one-to-many + NMS).
    """
    from trainers.model.heads import ultralytics_nms_arg

    return {
        "model": f"yolo26{arch.scale}.yaml", "data": settings.data, "epochs": settings.epochs,
        "imgsz": settings.imgsz, "batch": settings.batch, "device": device, "project": str(out.parent),
        "name": out.name, "exist_ok": True, "pretrained": False, "plots": False, "workers": 0,
        "seed": settings.seed, "deterministic": False, "verbose": False, "val": True,
        "close_mosaic": max(1, settings.epochs // 4), "warmup_epochs": min(3.0, settings.epochs / 5),
        "amp": device != "cpu", "nbs": settings.batch, "warmup_bias_lr": 0.0, "optimizer": "AdamW", "lr0": 0.003,
        "nms": ultralytics_nms_arg(settings.head),
        **({"distill_model": settings.teacher, "dis": settings.distill_weight} if settings.teacher else {}),
    }


def run_trial(arch: Architecture, settings: TrialSettings,
              pre_training: PreTraining | None = None) -> TrialResult | TrialFailure:
    """Train and score ``arch``; ``pre_training`` (measured by the caller) skips measuring it again."""
    from trainers.train.dataset import class_count
    from trainers.train.devices import train_device
    from trainers.train.trainer import (
        MAP50_KEY,
        MAP_KEY,
        ArchitectureTrainer,
        seed_as_the_trainer_will,
        trial_callbacks,
    )

    try:
        nc = settings.nc or class_count(settings.data)
    except ValueError as e:
        return TrialFailure(FailKind.ERROR, str(e), arch.hash)
    try:
        from trainers.model import build

        seed_as_the_trainer_will(settings.seed)
        model = build.build_model(arch, nc=nc)
    except Exception as e:  # an architecture that cannot be built is a failure of the architecture
        return TrialFailure(FailKind.BUILD, f"{type(e).__name__}: {e}"[:500], arch.hash)
    out, device = Path(settings.out).resolve(), train_device(settings.device)
    try:
        teacher, init_from, inherited = checkpoints_of(model, settings, nc)
    except ValueError as e:
        return TrialFailure(FailKind.ERROR, str(e), arch.hash)
    try:
        pre = pre_training or measure_pre_training(model, arch.hash, settings)
        epochs_log: list[dict[str, float]] = []
        trainer = ArchitectureTrainer(overrides=trial_overrides(arch, settings, out, device), architecture=arch,
                                      model=model, se_width_cost=settings.se_width_cost)
        for event, fn in trial_callbacks(device, epochs_log, nan_at_batch=settings.nan_at_batch).items():
            trainer.add_callback(event, fn)
        threads = cpu_threads(trainer, settings.train_threads)
        t0 = time.time()
        trainer.train()
        train_seconds = time.time() - t0
        metrics: dict[str, Any] = trainer.metrics or {}
        map50_95, map50 = float(metrics.get(MAP_KEY, math.nan)), float(metrics.get(MAP50_KEY, math.nan))
        if not (math.isfinite(map50_95) and math.isfinite(map50)):
            return TrialFailure(FailKind.ERROR, f"validation gave no finite mAP ({metrics})", arch.hash)
        weights = trainer.best if trainer.best.exists() else trainer.last
        int8 = int8_of_trial(weights, settings, out / "int8") if settings.latency.dtype == "int8" else None
        return TrialResult(
            arch_hash=arch.hash, architecture=arch.to_dict(), map50_95=map50_95, map50=map50, params=pre.params,
            gflops=pre.gflops, latency=pre.latency, train_seconds=round(train_seconds, 2),
            weights=str(weights), device=str(trainer.device), int8=int8,
            epochs=settings.epochs, epoch_map=tuple(round(r["map50_95"], 5) for r in epochs_log),
            teacher=teacher.to_dict() if teacher else None, init_from=init_from.to_dict() if init_from else None,
            inherited=inherited.to_dict() if inherited else None, epoch_threads=tuple(threads),
        )
    except Exception as e:
        return _failure_of(e, arch.hash)


def int8_of_trial(weights: Path, settings: TrialSettings, folder: Path) -> dict[str, Any]:
    """The trained checkpoint quantized as the INT8 target asks and validated at the trial's validation size:
    :meth:`trainers.deploy.quantize.Int8Accuracy.to_dict` (float and INT8 export of the same runtime), with the
    ``seconds`` it took (both exports and both validations: what an INT8 target adds to a trial)."""
    from ultralytics.nn.tasks import load_checkpoint

    from trainers.deploy.quantize import int8_accuracy

    t0 = time.time()
    model, _ = load_checkpoint(str(weights), device="cpu")
    acc = int8_accuracy(model, replace(settings.latency, imgsz=settings.imgsz), settings.data, folder)
    return {**acc.to_dict(), "seconds": round(time.time() - t0, 1)}


def checkpoints_of(model: Any, settings: TrialSettings, nc: int) -> tuple[Any, Any, Any]:
    """Check the teacher and the initialisation source, and start ``model`` from the latter.

    Returns (teacher CheckpointInfo | None, init CheckpointInfo | None, Inherited | None);
    ``ValueError`` (one line) for a checkpoint that is missing, not a detection model, or made for
    other classes.
    """
    from trainers.train.dataset import class_names
    from trainers.train.inherit import inherit_weights, state_of
    from trainers.train.teacher import describe_checkpoint, inspect_checkpoint, load_detection_checkpoint

    names = class_names(settings.data)
    teacher = inspect_checkpoint(settings.teacher, "--teacher", nc, names) if settings.teacher else None
    init_from, inherited = None, None
    if settings.init_from:  # loaded once: described, then its matching tensors copied
        path = Path(settings.init_from).resolve()
        source = load_detection_checkpoint(path, "--init-from")
        init_from = describe_checkpoint(path, source, "--init-from", nc, names)
        inherited = inherit_weights(model, state_of(source))
    return teacher, init_from, inherited


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainers.train.trial", description="Train and score one architecture.")
    p.add_argument("--job", type=existing_file("--job"), help="a trial job file (trial.json); no other flag then")
    p.add_argument("--arch", type=existing_file("--arch"))
    p.add_argument("--data", type=existing_file("--data"))
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 10000))
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096))
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=16)
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--out", default="studies/trials/trial")
    p.add_argument("--latency-imgsz", type=positive_int("--latency-imgsz", 32, 4096), default=640)
    p.add_argument("--latency-device", type=device_arg, default="auto")
    p.add_argument("--latency-dtype", choices=list(DTYPES), default="auto")
    p.add_argument("--latency-calib-images", type=positive_int("--latency-calib-images", 1, 100000),
                   default=DEFAULT_CALIB_IMAGES, help="INT8: calibration images from --data's train split")
    p.add_argument("--latency-backend", choices=list(BACKEND_NAMES), default="torch")
    p.add_argument("--latency-threads", type=positive_int("--latency-threads", 1, 256), default=1)
    p.add_argument("--head", choices=list(HEADS), default=DEFAULT_HEAD)
    p.add_argument("--latency-cache", default=None)
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--se-width-cost", type=non_negative_float("--se-width-cost"), default=0.0,
                   help="lambda of the DynamicSE width cost in the loss (default 0: none)")
    p.add_argument("--teacher", help="Ultralytics detection checkpoint to distill from (Ultralytics' distill_model)")
    p.add_argument("--distill-weight", type=non_negative_float("--distill-weight"), default=6.0,
                   help="distillation loss weight (Ultralytics' dis, default 6.0)")
    p.add_argument("--init-from", help="checkpoint whose tensors matching by layer and shape start the model")
    p.add_argument("--train-threads", type=thread_count_arg("--train-threads"), default=None,
                   help="torch threads while training on the CPU: N, or auto (Ultralytics' count plus its spare "
                        "core while other processes leave it idle; see trainers.train.threads); "
                        "default: Ultralytics' cpu_count - 1")
    p.add_argument("--nan-at-batch", type=positive_int("--nan-at-batch", 1, 10**9), default=None,
                   help=argparse.SUPPRESS)
    return p


def job_of_args(argv: list[str] | None) -> TrialJob:
    """The trial job the command line asks for (``--job FILE``, or the flags); exit 2 on bad input."""
    p = _parser()
    args = p.parse_args(argv)
    if args.job is not None:
        given = [a for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--") and a != "--job"]
        if given:
            fail(f"--job takes no other flag, got {given[0].split('=')[0]}")
        try:
            return TrialJob.read(args.job)
        except ValueError as e:
            fail(str(e))
    for flag in ("arch", "data", "epochs", "imgsz"):
        if getattr(args, flag) is None:
            fail(f"{p.prog}: the following arguments are required: --{flag} (or --job FILE)")
    try:
        arch = read_architecture(args.arch)
    except ValueError as e:
        fail(str(e))
    settings = TrialSettings(
        data=str(args.data.resolve()), out=args.out, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        device=args.device, head=args.head,
        latency=LatencySetting(imgsz=args.latency_imgsz, device=args.latency_device, dtype=args.latency_dtype,
                               calib_images=args.latency_calib_images,
                               threads=args.latency_threads, backend=args.latency_backend, head=args.head),
        latency_cache=args.latency_cache, seed=args.seed,
        nan_at_batch=args.nan_at_batch, se_width_cost=args.se_width_cost, distill_weight=args.distill_weight,
        train_threads=args.train_threads,
        teacher=str(Path(args.teacher).resolve()) if args.teacher else None,
        init_from=str(Path(args.init_from).resolve()) if args.init_from else None)
    if (why := settings.latency.int8_problem()) is not None:
        fail(f"--latency-dtype: {why}")
    check_checkpoints(settings)
    return TrialJob(arch, settings)


def check_checkpoints(settings: TrialSettings) -> None:
    """Exit 2 with one line when the teacher or the initialisation checkpoint cannot serve ``settings.data``."""
    from trainers.train.dataset import class_count, class_names
    from trainers.train.teacher import inspect_checkpoint

    try:
        nc, names = settings.nc or class_count(settings.data), class_names(settings.data)
        for flag, path in (("--teacher", settings.teacher), ("--init-from", settings.init_from)):
            if path:
                inspect_checkpoint(path, flag, nc, names)
    except ValueError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the TrialResult (or TrialFailure) as one JSON line."""
    job = job_of_args(argv)
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    log(f"trial {job.architecture.hash}: {job.architecture.blocks_summary()}")
    result = run_trial(job.architecture, job.settings, job.pre_training)
    emit_json(result.to_dict())
    return 0 if isinstance(result, TrialResult) else 1


if __name__ == "__main__":
    sys.exit(main())
