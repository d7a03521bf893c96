"""Benchmark: does each block family survive post-training INT8? Float mAP, INT8 mAP, drop, INT8 latency ratio.

Run from the repository root (small: embedded synthetic data, a few epochs)::

    YOLO_OFFLINE=1 PYTHONPATH=. python bench/int8_blocks.py --epochs 6 --seeds 2 --n-train 160 --n-val 48

For each family (stock C3k2, RepViT, C3k2_RVB_SE, OREPA, RepConv/OREPA, RepConv and QARepConv downsamples) and seed, one
model is trained on the same schedule by ``trainers.train.trial.run_trial`` with an INT8 ONNX
Runtime target: it quantizes the trained checkpoint through Ultralytics' exporter on the first
``--calib-images`` training images and validates the float and the INT8 export of that runtime on
the val split (``trainers.deploy.quantize.int8_accuracy``); the same is then done for OpenVINO
(NNCF). The drop is float minus INT8 mAP50-95 in points (0-100 scale). INT8 latency ratio to
stock: every family's untrained model (latency does not depend on weights) measured interleaved
with stock in the INT8 setting of each runtime at ``--latency-imgsz``, with one thread.

Prints the machine, one line per model, then a Markdown table (mean and spread, max - min, over
seeds) and one JSON line. Not a test: it prints numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from machine import print_machine

from trainers.cli import OneLineParser, log, positive_int, quiet_ultralytics
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture, StageChoice
from trainers.train.results import TrialResult

RUNTIMES = ("onnxruntime", "openvino")
STAGES = ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone", "p4_neck", "p3_out", "p4_out", "p5_out")
DOWNSAMPLED = ("p2_backbone", "p3_backbone", "p4_backbone", "p5_backbone", "p4_out", "p5_out")


def families() -> dict[str, Architecture]:
    """One architecture per block family: the family's block (or downsample) in every stage."""
    def every(**choice: Any) -> Architecture:
        return Architecture.create({s: StageChoice(**choice) for s in STAGES})

    return {
        "stock C3k2": Architecture.baseline(),
        "RepViT": every(block="RepViT", kernels=(3,)),
        "C3k2_RVB_SE": every(block="C3k2_RVB_SE", se="after_concat", kernels=(3,)),
        "OREPA": every(block="OREPA"),
        "RepConv/OREPA downsample": Architecture.create(
            {s: StageChoice(downsample="RepConv" if i % 2 == 0 else "OREPA") for i, s in enumerate(DOWNSAMPLED)}),
        "RepConv downsample": Architecture.create({s: StageChoice(downsample="RepConv") for s in DOWNSAMPLED}),
        "QARepConv downsample": Architecture.create({s: StageChoice(downsample="QARepConv") for s in DOWNSAMPLED}),
    }


def train_one(name: str, arch: Architecture, seed: int, args: Any, folder: Path) -> dict[str, Any]:
    """Train ``arch`` (ONNX Runtime INT8 accuracy included), then OpenVINO INT8 accuracy of the same weights."""
    from ultralytics.nn.tasks import load_checkpoint

    from trainers.deploy.quantize import int8_accuracy
    from trainers.latency.report import LatencyReport
    from trainers.train.results import PreTraining, TrialSettings
    from trainers.train.trial import run_trial

    stub = LatencyReport(median_ms=0.0, p90_ms=0.0, mean_ms=0.0, cv=0.0, n=0, mode="not measured", device="cpu",
                         dtype="int8", batch=1, imgsz=args.imgsz, threads=1, torch=torch.__version__, fused=True)
    latency = LatencySetting(imgsz=args.imgsz, device="cpu", dtype="int8", backend="onnxruntime",
                             calib_images=args.calib_images)
    out = folder / f"{name.replace('/', '_').replace(' ', '_')}_s{seed}"
    settings = TrialSettings(data=args.data, out=str(out), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                             device="cpu", latency=latency, seed=seed, train_threads=args.train_threads)
    t0 = time.time()
    result = run_trial(arch, settings, PreTraining(0, 0.0, stub))
    if not isinstance(result, TrialResult):
        raise RuntimeError(f"{name} seed {seed}: {result.reason}")
    row = {"family": name, "seed": seed, "map50_95_trial": result.map50_95, "onnxruntime": result.int8}
    model, _ = load_checkpoint(result.weights, device="cpu")
    ov = int8_accuracy(model, replace(settings.latency, backend="openvino", imgsz=args.imgsz), args.data,
                       out / "int8_openvino")
    row["openvino"] = ov.to_dict()
    row["seconds"] = round(time.time() - t0, 1)
    return row


def latency_ratios(args: Any) -> dict[str, dict[str, float]]:
    """Per runtime, each family's INT8 median latency over stock's (untrained models, interleaved)."""
    from trainers.latency.interleaved import measure_interleaved
    from trainers.model.build import build_model

    archs = families()
    models = [build_model(a, nc=args.nc) for a in archs.values()]
    out: dict[str, dict[str, float]] = {}
    for runtime in RUNTIMES:
        for dtype in ("float32", "int8"):
            setting = LatencySetting(imgsz=args.latency_imgsz, device="cpu", dtype=dtype, backend=runtime,
                                     calib_images=args.calib_images, calib_data=args.data)
            reports = measure_interleaved(models, setting, rounds=args.rounds, repeats=3)
            key = f"{runtime}/{dtype}"
            out[key] = {n: r.median_ms for n, r in zip(archs, reports)}
            log(f"latency {key} @ {args.latency_imgsz} px: "
                + ", ".join(f"{n} {r.median_ms:.2f} ms" for n, r in zip(archs, reports)))
    return out


def spread(values: list[float]) -> str:
    """``mean (max - min)`` of ``values``."""
    return f"{statistics.fmean(values):.2f} ({max(values) - min(values):.2f})" if values else "-"


def table(rows: list[dict[str, Any]], lat: dict[str, dict[str, float]], seeds: int) -> str:
    """The Markdown table: per family and runtime, mAP50-95 float / INT8 / drop (points) and INT8 latency ratio."""
    lines = ["| family | runtime | float mAP50-95 | INT8 mAP50-95 | drop (points) | INT8 latency / stock INT8 | "
             "INT8 / float latency |", "|---|---|---|---|---|---|---|"]
    for name in families():
        for rt in RUNTIMES:
            acc = [r[rt] for r in rows if r["family"] == name]
            f = [100 * a["map50_95_float"] for a in acc]
            q = [100 * a["map50_95_int8"] for a in acc]
            d = [a["int8_drop"] for a in acc]
            i8, fp = lat.get(f"{rt}/int8", {}), lat.get(f"{rt}/float32", {})
            ratio = f"{i8[name] / i8['stock C3k2']:.2f}" if name in i8 else "-"
            speed = f"{i8[name] / fp[name]:.2f}" if name in i8 and name in fp else "-"
            lines.append(f"| {name} | {rt} | {spread(f)} | {spread(q)} | {spread(d)} | {ratio} | {speed} |")
    return "\n".join(lines) + f"\n\nmean (max - min) over {seeds} seeds; mAP in points (0-100)."


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = OneLineParser(prog="bench/int8_blocks.py", description=__doc__)
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 1000), default=6)
    p.add_argument("--seeds", type=positive_int("--seeds", 1, 20), default=2)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 1024), default=64)
    p.add_argument("--latency-imgsz", type=positive_int("--latency-imgsz", 32, 1024), default=320)
    p.add_argument("--batch", type=positive_int("--batch", 1, 256), default=16)
    p.add_argument("--n-train", type=positive_int("--n-train", 8, 100000), default=160)
    p.add_argument("--n-val", type=positive_int("--n-val", 8, 100000), default=48)
    p.add_argument("--calib-images", type=positive_int("--calib-images", 1, 100000), default=300)
    p.add_argument("--rounds", type=positive_int("--rounds", 1, 1000), default=10)
    p.add_argument("--train-threads", type=positive_int("--train-threads", 1, 64), default=1)
    p.add_argument("--families", help="comma-separated subset of the families (default: all)")
    args = p.parse_args(argv)
    quiet_ultralytics()
    from trainers.train.data import generate_synth
    from trainers.train.dataset import class_count

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="int8_blocks_"))
    args.data = str(generate_synth(work / "synth", seed=0, n_train=args.n_train, n_val=args.n_val,
                                   size=args.imgsz, progress=lambda _: None))
    args.nc = class_count(args.data)
    print_machine(torch.device("cpu"), 1)
    print(f"settings: epochs {args.epochs}, seeds {args.seeds}, train/val {args.imgsz} px, synthetic "
          f"{args.n_train}+{args.n_val} images, calibration {args.calib_images} train images, latency "
          f"{args.latency_imgsz} px 1 thread, work dir {work}")
    chosen = [f.strip() for f in args.families.split(",")] if args.families else list(families())
    rows = []
    for seed in range(args.seeds):
        for name in chosen:
            row = train_one(name, families()[name], seed, args, work)
            rows.append(row)
            print(f"{name} seed {seed}: trial mAP {row['map50_95_trial']:.4f}; " + "; ".join(
                f"{rt} float {row[rt]['map50_95_float']:.4f} int8 {row[rt]['map50_95_int8']:.4f} drop "
                f"{row[rt]['int8_drop']:.2f}" for rt in RUNTIMES) + f" ({row['seconds']} s)", flush=True)
    lat = latency_ratios(args)
    print(table(rows, lat, args.seeds))
    print(json.dumps({"rows": rows, "latency_ms": lat, "args": {k: v for k, v in vars(args).items()}}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
