"""One trial end to end: build the architecture, train it with Ultralytics, validate, measure latency.

``run_trial(arch, settings) -> TrialResult | TrialFailure``. Nothing gets a made-up score:
a build error, an out-of-memory error, a non-finite loss (caught at its first batch) or any
other exception comes back as a :class:`TrialFailure` with its reason.

CLI (stdout: one JSON line, the result)::

    python -m trainers.trial --arch ARCH.json --data DATA.yaml --epochs E --imgsz S [--batch B]
                             [--device cpu|0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from trainers.architecture import Architecture
from trainers.cli import OneLineParser, device_arg, emit_json, existing_file, fail, log, positive_int
from trainers.results import TrialFailure, TrialResult, TrialSettings


def train_device(device: str) -> str:
    """Ultralytics' device string for a trial: ``auto`` -> ``0`` with CUDA, else ``cpu``."""
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    return device.removeprefix("cuda:") if device.startswith("cuda:") else ("0" if device == "cuda" else device)


def _failure_of(exc: BaseException, arch_hash: str) -> TrialFailure:
    from trainers.trainer import NonFiniteLoss

    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, NonFiniteLoss):
        return TrialFailure("nan", str(exc), arch_hash)
    if "out of memory" in str(exc).lower():
        return TrialFailure("oom", text[:500], arch_hash)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return TrialFailure("error", (text + where)[:500], arch_hash)


def _overrides(arch: Architecture, settings: TrialSettings, out: Path, device: str) -> dict[str, Any]:
    """Ultralytics arguments of a trial: a short-schedule recipe on top of Ultralytics' defaults.

    A search trains each candidate for a few epochs, so: AdamW at lr0 0.003 (Ultralytics' ``auto``
    picks about 0.001 for 5 classes, too slow for 12 epochs), an optimizer step every batch
    (``nbs`` = batch; the default 64 accumulates several batches per step, leaving few steps), no
    warm-up bias learning rate, a short warm-up, and mosaic closed for the last quarter.
    """
    return {
        "model": f"yolo26{arch.scale}.yaml", "data": settings.data, "epochs": settings.epochs,
        "imgsz": settings.imgsz, "batch": settings.batch, "device": device, "project": str(out.parent),
        "name": out.name, "exist_ok": True, "pretrained": False, "plots": False, "workers": 0,
        "seed": settings.seed, "deterministic": False, "verbose": False, "val": True,
        "close_mosaic": max(1, settings.epochs // 4), "warmup_epochs": min(3.0, settings.epochs / 5),
        "amp": device != "cpu", "nbs": settings.batch, "warmup_bias_lr": 0.0, "optimizer": "AdamW", "lr0": 0.003,
    }


def run_trial(arch: Architecture, settings: TrialSettings, latency: Any = None) -> TrialResult | TrialFailure:
    """Train and score ``arch``; ``latency`` (a ``LatencyReport``) skips the measurement when given."""
    from trainers.build import build_model
    from trainers.inference import count_params, gflops
    from trainers.latency import LatencyCache, measure_architecture_latency
    from trainers.trainer import MAP50_KEY, MAP_KEY, ArchitectureTrainer, trial_callbacks

    out = Path(settings.out).resolve()
    device = train_device(settings.device)
    try:
        build_model(arch)
    except Exception as e:  # an architecture that cannot be built is a failure of the architecture
        return TrialFailure("build", f"{type(e).__name__}: {e}"[:500], arch.hash)
    try:
        if latency is None:
            cache = LatencyCache(settings.latency_cache) if settings.latency_cache else None
            latency, _ = measure_architecture_latency(arch, settings.latency_imgsz, settings.latency_device,
                                                      settings.latency_dtype, cache=cache)
        epochs_log: list[dict[str, float]] = []
        trainer = ArchitectureTrainer(overrides=_overrides(arch, settings, out, device), architecture=arch)
        for event, fn in trial_callbacks(device, epochs_log, nan_at_batch=settings.nan_at_batch).items():
            trainer.add_callback(event, fn)
        t0 = time.time()
        trainer.train()
        train_seconds = time.time() - t0
        metrics: dict[str, Any] = trainer.metrics or {}
        map50_95, map50 = float(metrics.get(MAP_KEY, math.nan)), float(metrics.get(MAP50_KEY, math.nan))
        if not (math.isfinite(map50_95) and math.isfinite(map50)):
            return TrialFailure("error", f"validation gave no finite mAP ({metrics})", arch.hash)
        model: Any = trainer.model
        return TrialResult(
            arch_hash=arch.hash, architecture=arch.to_dict(), map50_95=map50_95, map50=map50,
            params=count_params(model), gflops=round(gflops(model, settings.latency_imgsz), 4), latency=latency,
            train_seconds=round(train_seconds, 2), weights=str(trainer.best if trainer.best.exists() else trainer.last),
            device=str(trainer.device), epochs=settings.epochs,
            epoch_map=tuple(round(r["map50_95"], 5) for r in epochs_log),
        )
    except Exception as e:
        return _failure_of(e, arch.hash)


def read_architecture(path: Path) -> Architecture:
    """Read an architecture JSON file (one line of ``search.space sample``); ``ValueError`` if bad."""
    try:
        text = path.read_text(encoding="utf-8").strip().splitlines()
        return Architecture.from_dict(json.loads(text[0]) if text else {"": None})
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--arch {path}: not a JSON architecture line ({e.__class__.__name__})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"--arch {path}: {e}") from None


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainers.trial", description="Train and score one architecture.")
    p.add_argument("--arch", type=existing_file("--arch"), required=True)
    p.add_argument("--data", type=existing_file("--data"), required=True)
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 10000), required=True)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), required=True)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=16)
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--out", default="studies/trials/trial")
    p.add_argument("--latency-imgsz", type=positive_int("--latency-imgsz", 32, 4096), default=640)
    p.add_argument("--latency-device", type=device_arg, default="auto")
    p.add_argument("--latency-cache", default=None)
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--nan-at-batch", type=positive_int("--nan-at-batch", 1, 10**9), default=None,
                   help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the TrialResult (or TrialFailure) as one JSON line."""
    args = _parser().parse_args(argv)
    try:
        arch = read_architecture(args.arch)
    except ValueError as e:
        fail(str(e))
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    settings = TrialSettings(
        data=str(args.data.resolve()), out=args.out, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        device=args.device, latency_imgsz=args.latency_imgsz, latency_device=args.latency_device,
        latency_cache=args.latency_cache, seed=args.seed, nan_at_batch=args.nan_at_batch,
    )
    log(f"trial {arch.hash}: {arch.blocks_summary()}")
    result = run_trial(arch, settings)
    emit_json(result.to_dict())
    return 0 if isinstance(result, TrialResult) else 1


if __name__ == "__main__":
    sys.exit(main())
