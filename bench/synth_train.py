"""Benchmark: train a stock YOLO26n on the synthetic dataset; print wall time and mAP.

Run from the repository root::

    /work/venv/bin/python bench/synth_train.py                  # the space's defaults, as a trial trains
    /work/venv/bin/python bench/synth_train.py --epochs 16 --set seed=1
    /work/venv/bin/python bench/synth_train.py --stock          # Ultralytics' own recipe, for comparison

It generates (or reuses) the synthetic dataset with the given parameters under
``studies/bench/data/`` (or takes ``--data``) and trains ``yolo26n.yaml`` from scratch on the
CPU exactly as a search trial does: ``trainers.train.trainer.ArchitectureTrainer`` building
``Architecture.baseline()`` with the overrides of ``trainers.train.trial`` (its short-schedule
recipe). ``--stock`` uses Ultralytics' defaults for the optimizer, ``nbs``, warm-up and
``close_mosaic`` instead; ``--set KEY=VALUE`` overrides anything. It prints per-epoch
mAP50-95, train loss and epoch time on stderr, then the machine, the settings, the training
wall time (``trainer.train()``, including its final validation of ``best.pt``) and the final
mAP50-95 / mAP50 on stdout, ending with one JSON line.

Timings depend on everything else running on the machine: the load average before and after
is printed with them. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from machine import print_machine

from trainers.cli import OneLineParser, fail, log, positive_int, quiet_ultralytics
from trainers.train.data import CLI_FLAGS, DEFAULT_N_TRAIN, DEFAULT_N_VAL, DEFAULT_SIZE, SynthSpec
from trainers.train.threads import cpu_threads, thread_count_arg

_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings, validated before torch and Ultralytics are imported."""
    p = OneLineParser(prog="bench/synth_train.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="data YAML (default: the synthetic set of the parameters below)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed")
    p.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN)
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL)
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="dataset image side in pixels")
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 1000), default=12)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=128)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=8)
    p.add_argument("--threads", type=thread_count_arg("--threads"),
                   help="torch threads for training: N, or auto as search.run trains (trainers.train.threads); "
                        "default: Ultralytics' choice, cpu_count - 1 capped at 8")
    p.add_argument("--stock", action="store_true", help="Ultralytics' default recipe instead of the trial's")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other trainer override, e.g. --set mosaic=0 (repeatable; values parsed as YAML)")
    p.add_argument("--project", type=Path, default=_ROOT / "studies" / "bench" / "synth_train")
    args = p.parse_args(argv)
    try:
        args.extra = dict(parse_override(text) for text in args.extra)
    except ValueError as e:
        fail(str(e))
    if args.data is not None and not args.data.is_file():
        fail(f"--data: no such file {str(args.data)!r}")
    flags = {**CLI_FLAGS, "n_train": "--n-train", "n_val": "--n-val"}
    try:
        args.spec = SynthSpec(args.seed, args.n_train, args.n_val, args.size).validate(flags)
    except ValueError as e:
        fail(str(e))
    return args


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(key, value)`` with the value parsed as YAML; ``ValueError`` if malformed."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"--set must be KEY=VALUE with KEY an identifier, got {text!r}")
    return key, yaml.safe_load(value)


def dataset_yaml(args: argparse.Namespace) -> Path:
    """The data YAML to train on: ``--data`` or the synthetic set of ``args.spec``."""
    if args.data is not None:
        return args.data.resolve()
    from trainers.train.data import generate_synth

    s = args.spec
    out = _ROOT / "studies" / "bench" / "data" / f"synth-s{s.seed}-{s.n_train}-{s.n_val}-{s.size}px"
    return generate_synth(out, seed=s.seed, n_train=s.n_train, n_val=s.n_val, size=s.size).resolve()


def train_overrides(args: argparse.Namespace, data: Path, name: str) -> dict[str, Any]:
    """Trainer overrides: a trial's own (CPU, offline, no plots, nothing under ``runs/``), then ``--set``."""
    from trainers.model.architecture import Architecture
    from trainers.train.results import TrialSettings
    from trainers.train.trial import trial_overrides  # the search's exact recipe, not a copy

    out = args.project.resolve() / name
    settings = TrialSettings(data=str(data), out=str(out), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                             device="cpu")
    kw = trial_overrides(Architecture.baseline(), settings, out, "cpu")
    if args.stock:
        for key in ("close_mosaic", "warmup_epochs", "nbs", "warmup_bias_lr", "optimizer", "lr0"):
            kw.pop(key, None)
    return {**kw, **args.extra}


def settings_line(args: argparse.Namespace) -> str:
    """The training settings in words."""
    parts = [f"YOLO26n from scratch, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}",
             "Ultralytics' default recipe" if args.stock else "the trial recipe (trainers.train.trial)"]
    return ", ".join(parts + [f"{k}={v}" for k, v in args.extra.items()])


def epoch_logger(rows: list[dict[str, float]]) -> Any:
    """An ``on_fit_epoch_end`` callback that records and logs each epoch's mAP and duration."""
    state = {"t": time.time()}

    def on_fit_epoch_end(trainer: Any) -> None:
        now = time.time()
        m = trainer.metrics or {}
        row = {"epoch": trainer.epoch + 1, "map50_95": float(m.get("metrics/mAP50-95(B)", float("nan"))),
               "seconds": round(now - state["t"], 2)}
        state["t"] = now
        rows.append(row)
        loss = " ".join(f"{k} {float(v):.3f}" for k, v in (trainer.tloss or {}).items()) or "-"
        log(f"epoch {row['epoch']}: mAP50-95 {row['map50_95']:.4f}, train loss {loss} ({row['seconds']:.1f} s)")

    return on_fit_epoch_end


def main(argv: list[str] | None = None) -> int:
    """Train, then print the machine, the settings, wall time and final mAP."""
    args = parse_args(argv)
    data = dataset_yaml(args)
    quiet_ultralytics()
    import torch

    from trainers.model.architecture import Architecture
    from trainers.train.trainer import MAP50_KEY, MAP_KEY, ArchitectureTrainer

    s = args.spec
    name = "-".join([f"e{args.epochs}-i{args.imgsz}-b{args.batch}-{data.parent.name}-t{args.threads or 'ultralytics'}",
                     *(f"{k}{v}" for k, v in args.extra.items())] + (["stock"] if args.stock else []))
    trainer = ArchitectureTrainer(overrides=train_overrides(args, data, name), architecture=Architecture.baseline())
    epoch_threads = cpu_threads(trainer, args.threads)  # as a trial sets them
    rows: list[dict[str, float]] = []
    trainer.add_callback("on_fit_epoch_end", epoch_logger(rows))
    load0 = os.getloadavg()
    t0 = time.time()
    trainer.train()
    wall = time.time() - t0
    load1 = os.getloadavg()
    metrics: dict[str, Any] = trainer.metrics or {}
    result = {
        "data": str(data), "n_train": s.n_train, "n_val": s.n_val, "size": s.size, "epochs": args.epochs,
        "imgsz": args.imgsz, "batch": args.batch, "stock": args.stock, "extra": args.extra, "wall_s": round(wall, 1),
        "map50_95": round(float(metrics.get(MAP_KEY, "nan")), 4),
        "map50": round(float(metrics.get(MAP50_KEY, "nan")), 4),
        "epoch_map50_95": [round(r["map50_95"], 4) for r in rows], "load_before": load0[0], "load_after": load1[0],
        "threads": epoch_threads,
    }
    print_machine(torch.device("cpu"))
    print(f"# load average (1 min) before {load0[0]:.2f}, after {load1[0]:.2f}: other work on the machine "
          f"inflates the times")
    print(f"# data {data} ({s.n_train} train / {s.n_val} val images, {s.size} px)" if args.data is None
          else f"# data {data}")
    print(f"# {settings_line(args)}, torch threads per epoch while training: {epoch_threads}")
    print(f"wall time {wall:.1f} s | mAP50-95 {result['map50_95']:.4f} | mAP50 {result['map50']:.4f}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
