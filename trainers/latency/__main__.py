"""``python -m trainers.latency --arch ARCH.json --imgsz S [--device ...] [--backend B] [--head H] [--unfused]``.

``--dtype int8`` (backend onnxruntime or openvino) quantizes post-training on ``--calib-images`` images of
``--calib-data``'s train split (:mod:`trainers.deploy.quantize`).

Prints the LatencyReport of the architecture (untrained: latency does not depend on the
weights) as one JSON line. ``--unfused`` measures the training form, with no fusing at all.
Bad input: one line on stderr, exit 2, checked before torch is imported.
"""

from __future__ import annotations

import sys

from trainers.cli import OneLineParser, device_arg, emit_json, existing_file, fail, positive_int
from trainers.latency.setting import BACKEND_NAMES, DEFAULT_CALIB_IMAGES, DTYPES
from trainers.model.heads import DEFAULT_HEAD, HEADS


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = OneLineParser(prog="python -m trainers.latency", description=__doc__)
    p.add_argument("--arch", type=existing_file("--arch"), required=True)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=640)
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--dtype", choices=list(DTYPES), default="auto")
    p.add_argument("--calib-data", type=existing_file("--calib-data"), help="INT8: data YAML whose train split "
                   "calibrates")
    p.add_argument("--calib-images", type=positive_int("--calib-images", 1, 100000), default=DEFAULT_CALIB_IMAGES)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=1)
    p.add_argument("--threads", type=positive_int("--threads", 1, 1024), default=2)
    p.add_argument("--nc", type=positive_int("--nc", 1, 10000), default=80)
    p.add_argument("--unfused", action="store_true", help="measure the training form (no fusing at all)")
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default="torch", help="runtime that times the model")
    p.add_argument("--head", choices=list(HEADS), default=DEFAULT_HEAD, help="head measured, with its post-processing")
    args = p.parse_args(argv)
    if args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    if args.dtype == "int8" and args.backend == "torch":
        fail("--dtype int8 needs --backend onnxruntime or openvino (eager PyTorch has no INT8 path)")
    if args.dtype == "int8" and args.calib_data is None:
        fail("--dtype int8 needs --calib-data DATA.yaml (its train split calibrates the quantizer)")
    from trainers.model.architecture import read_architecture

    try:
        arch = read_architecture(args.arch)
    except ValueError as e:
        fail(str(e))
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    from trainers.latency.measure import measure_architecture_latency
    from trainers.latency.setting import LatencySetting

    try:
        setting = LatencySetting(imgsz=args.imgsz, device=args.device, dtype=args.dtype, batch=args.batch,
                                 threads=args.threads, backend=args.backend, head=args.head,
                                 calib_images=args.calib_images,
                                 calib_data=str(args.calib_data.resolve()) if args.calib_data else None)
        report, _ = measure_architecture_latency(arch, setting, nc=args.nc, fused=not args.unfused)
    except ValueError as e:  # e.g. a CUDA device on a machine without one
        fail(str(e))
    emit_json(report.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
