"""Benchmark: whole-detector latency of stock YOLO26n vs rep architectures, per fuse level.

Run from the repository root::

    python3 bench/latency.py                        # CPU, 640 px, 1 thread, about 2 minutes
    python3 bench/latency.py --device cuda          # fp16, eager and CUDA graph
    python3 bench/latency.py --imgsz 320 --repeats 5
    python3 bench/latency.py --backends torch,onnxruntime,openvino   # the runtimes compared, CPU

Architectures (untrained: latency does not depend on the weights): the stock YOLO26n, and
the same model with every stage a RepViT block, a C3k2_RVB_SE block (SE after the concat) or
an OREPA block (with OREPA stride-2 downsamples). Each is measured in three forms, built with
:func:`trainers.deploy.inference.fused_copy`:

- ``unfused``: the training form as is (``ultralytics_fuse=False, ours=False``);
- ``ultralytics``: Ultralytics' ``model.fuse()`` only (its Conv+BN, RepConv, Detect's spare head);
- ``full``: that plus :func:`blocks.reparameterize_model` (what a trial's latency measures).

Timing uses :mod:`trainers.latency.timing`, the loops behind ``measure_latency``, holding the
device lock exclusively as ``measure_latency`` does: on CPU, float32 with
``torch.set_num_threads(--threads)``, ``--warmup`` untimed forwards and ``--iters`` timed ones
(``time_cpu``, ``time.perf_counter``); on CUDA, fp16 (folded in float32 first), both eagerly
(``time_cuda_events`` around each forward) and as a captured CUDA-graph replay (``time_cuda``).
Each (form, mode) is measured ``--repeats`` times, round-robin over all architectures and forms
(so load drift spreads over every row); a row gives the median of the repeats' medians, the
90th percentile over all timed forwards, the mean within-repeat coefficient of variation and
the CV of the repeats' medians (run-to-run spread). Per architecture the harness's own wall
time (build, fuse, warm-up, timing) is printed.

``--backends`` compares deployment runtimes instead (see :mod:`latency_backends`): the fused
``nms_free`` detector timed by each named backend's own ``measure`` (torch eager, ONNX Runtime,
OpenVINO; those not installed are skipped), on the CPU, ``--repeats`` rounds round-robin, with
the Kendall tau of each pair of backends' architecture rankings.

CPU threads default to 1. With 2 threads on a 2-core machine where anything else runs, one
thread is regularly descheduled and every parallel op waits for it at its barrier: measured
here, the stock model at 64 px took 7 ms alone and 80-1300 ms (CV > 100 %) beside one busy
training process, while 1 thread stayed within a few percent. ``--threads 2`` gives the
deployment figure on an idle machine; a warning is printed when the load average says the
machine is not idle. Timings depend on everything else running on the machine: the load
average before and after is printed with them. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from latency_backends import run_backend_comparison
from machine import print_machine

from trainers.cli import OneLineParser, device_arg, fail, log, positive_int, quiet_ultralytics
from trainers.latency.setting import BACKEND_NAMES

FORMS: dict[str, tuple[bool, bool]] = {  # name -> (ultralytics_fuse, ours)
    "unfused": (False, False),
    "ultralytics": (True, False),
    "full": (True, True),
}


def architectures() -> dict[str, Any]:
    """Name -> :class:`Architecture`: the stock model and one rep family in every stage."""
    from trainers.model.architecture import Architecture, StageChoice
    from trainers.model.layout import STAGE_LAYERS

    def every_stage(choice: StageChoice) -> Architecture:
        return Architecture.create({name: choice for name in STAGE_LAYERS})

    return {
        "YOLO26n (stock)": Architecture.baseline(),
        "RepViT": every_stage(StageChoice(block="RepViT", kernels=(3,))),
        "C3k2_RVB_SE": every_stage(StageChoice(block="C3k2_RVB_SE", se="after_concat", kernels=(3,))),
        "OREPA": every_stage(StageChoice(block="OREPA", downsample="OREPA")),
    }


@dataclass(frozen=True)
class Row:
    """One (architecture, form, mode) measurement over all repeats."""

    arch: str
    form: str
    mode: str
    params: int
    medians_ms: tuple[float, ...]
    p90_ms: float
    cv_within: float

    @property
    def median_ms(self) -> float:
        """Median of the repeats' medians."""
        return statistics.median(self.medians_ms)

    @property
    def cv_between(self) -> float:
        """Coefficient of variation of the repeats' medians."""
        mean = statistics.fmean(self.medians_ms)
        return statistics.pstdev(self.medians_ms) / mean if mean > 0 and len(self.medians_ms) > 1 else 0.0


def time_cuda_eager(model: Any, x: Any, warmup: int, iters: int) -> list[float]:
    """Milliseconds of ``iters`` eager forwards (no autograd), each bracketed by CUDA events."""
    import torch

    from trainers.latency.timing import time_cuda_events

    with torch.no_grad():
        return time_cuda_events(lambda: model(x), warmup, iters)


def timers(cuda: bool, args: argparse.Namespace) -> dict[str, Callable[[Any, Any], tuple[list[float], str]]]:
    """Mode name -> ``f(model, x) -> (times_ms, mode actually used)``."""
    from trainers.latency.timing import time_cpu, time_cuda

    if not cuda:
        return {"eager": lambda m, x: (time_cpu(m, x, args.warmup, args.iters), "eager")}
    return {
        "eager": lambda m, x: (time_cuda_eager(m, x, args.warmup, args.iters), "eager"),
        "graph": lambda m, x: time_cuda(m, x, args.warmup, args.iters),
    }


@dataclass
class Subject:
    """One (architecture, form) ready to time, and the samples collected for each mode."""

    arch: str
    form: str
    net: Any
    params: int
    times: dict[str, list[list[float]]] = field(default_factory=dict)  # mode -> one list per repeat
    used: dict[str, str] = field(default_factory=dict)  # mode -> mode actually used

    def row(self, mode: str) -> Row:
        """The summary row of ``mode`` (per-repeat and pooled figures by :func:`trainers.latency.timing.summarize`)."""
        from trainers.latency.timing import summarize

        runs = [summarize(run) for run in self.times[mode]]
        pooled = summarize([t for run in self.times[mode] for t in run])
        used = self.used[mode]
        label = mode if used == mode else f"{mode}->{used}"  # a failed graph capture says so
        return Row(self.arch, self.form, label, self.params, tuple(run["median_ms"] for run in runs),
                   pooled["p90_ms"], statistics.fmean(run["cv"] for run in runs))


def prepare(name: str, arch: Any, dev: Any, dtype: Any) -> list[Subject]:
    """The three forms of ``arch`` on ``dev`` in ``dtype`` (folded in float32 first)."""
    from trainers.deploy.inference import count_params, fused_copy
    from trainers.model.build import build_model

    model = build_model(arch, nc=80)
    subjects = []
    for form, (ultralytics_fuse, ours) in FORMS.items():
        net = fused_copy(model, ultralytics_fuse=ultralytics_fuse, ours=ours)
        subjects.append(Subject(name, form, net.to(dev, dtype), count_params(net)))
    return subjects


def measure_all(archs: dict[str, Any], args: argparse.Namespace) -> tuple[list[Row], dict[str, float]]:
    """Every row, and the harness's wall time per architecture (build, fuse, warm-up, timing).

    Repeats go round-robin over all (architecture, form, mode), so a change in the machine's
    load during the run spreads over every row instead of landing on one architecture.
    """
    import torch

    from trainers.train.device_lock import device_lock

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    x = torch.rand(1, 3, args.imgsz, args.imgsz, device=dev, dtype=dtype)
    walls = dict.fromkeys(archs, 0.0)
    subjects: list[Subject] = []
    for name, arch in archs.items():
        log(f"{name} ({arch.hash}): {arch.blocks_summary()}")
        t0 = time.perf_counter()
        subjects += prepare(name, arch, dev, dtype)
        walls[name] += time.perf_counter() - t0
    with device_lock(str(dev), exclusive=True):
        for r in range(args.repeats):
            for subject in subjects:
                for mode, timer in timers(cuda, args).items():
                    t0 = time.perf_counter()
                    times, subject.used[mode] = timer(subject.net, x)
                    walls[subject.arch] += time.perf_counter() - t0
                    subject.times.setdefault(mode, []).append(times)
                    log(f"  repeat {r + 1}/{args.repeats} {subject.arch:16} {subject.form:11} {mode:5} "
                        f"{statistics.median(times):9.2f} ms")
    return [s.row(mode) for s in subjects for mode in s.times], walls


def print_settings(args: argparse.Namespace) -> None:
    """Machine, versions and settings (see :mod:`machine`): what the numbers were measured on."""
    import torch

    dev = torch.device(args.device)
    print_machine(dev, args.threads)
    if dev.type == "cuda":
        print(f"# CUDA fp16 (folded in float32), batch 1, {args.imgsz} px; eager: CUDA events per forward; "
              f"graph: one captured forward replayed; warm-up {args.warmup}, {args.iters} timed, "
              f"{args.repeats} repeats")
    else:
        print(f"# CPU float32, batch 1, {args.imgsz} px, torch.set_num_threads({args.threads}); warm-up "
              f"{args.warmup}, {args.iters} timed forwards (time.perf_counter), {args.repeats} repeats")


def print_table(rows: list[Row], walls: dict[str, float]) -> None:
    """The result table, one line per (architecture, form, mode), then wall times."""
    print(f"\n{'architecture':18} {'form':11} {'mode':6} {'params':>10} {'median ms':>10} {'p90 ms':>9} "
          f"{'cv within':>9} {'cv runs':>8} {'vs unfused':>10}")
    base = {(r.arch, r.mode): r.median_ms for r in rows if r.form == "unfused"}
    for r in rows:
        ratio = r.median_ms / base[(r.arch, r.mode)] if base.get((r.arch, r.mode)) else float("nan")
        print(f"{r.arch:18} {r.form:11} {r.mode:6} {r.params:10,d} {r.median_ms:10.2f} {r.p90_ms:9.2f} "
              f"{100 * r.cv_within:8.1f}% {100 * r.cv_between:7.1f}% {ratio:9.2f}x")
    print("\n# harness wall time per architecture (build, fuse, warm-up, timing): "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in walls.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings, validated before torch and Ultralytics are imported."""
    p = OneLineParser(prog="bench/latency.py", description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=640)
    p.add_argument("--device", type=device_arg, default="auto", help="cpu, cuda, cuda:N, N or auto")
    p.add_argument("--repeats", type=positive_int("--repeats", 1, 100), default=3, help="measurements per row")
    p.add_argument("--iters", type=positive_int("--iters", 1, 100000), default=None,
                   help="timed forwards per repeat (default: 10 on CPU, 200 on CUDA)")
    p.add_argument("--warmup", type=positive_int("--warmup", 1, 100000), default=None,
                   help="untimed forwards per repeat (default: 2 on CPU, 20 on CUDA)")
    p.add_argument("--threads", type=positive_int("--threads", 1, 1024), default=1,
                   help="CPU threads (default 1: see the module docstring)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="measure only these architectures (names as printed, e.g. OREPA RepViT)")
    p.add_argument("--backends", type=backend_list, default=None, metavar="B1,B2",
                   help=f"compare these runtimes on the CPU instead of the fuse forms (from {','.join(BACKEND_NAMES)})")
    args = p.parse_args(argv)
    if args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    if args.backends and args.device not in ("auto", "cpu"):
        fail(f"--backends compares the runtimes on the CPU: --device must be cpu or auto, got {args.device!r}")
    return args


def backend_list(text: str) -> list[str]:
    """``torch,onnxruntime`` -> the names, each one of :data:`BACKEND_NAMES` (argparse type)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in BACKEND_NAMES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"must be names from {list(BACKEND_NAMES)}, got {text!r}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> None:
    """Measure every architecture and print the table."""
    args = parse_args(argv)
    quiet_ultralytics()
    import torch

    from trainers.train.devices import resolve_device

    if args.backends:
        args.device = "cpu"
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as e:
        fail(str(e))
    cuda = args.device.startswith("cuda")
    args.iters = args.iters or (200 if cuda else 10)
    args.warmup = args.warmup or (20 if cuda else 2)
    archs = architectures()
    if args.only:
        unknown = [n for n in args.only if n not in archs]
        if unknown:
            fail(f"--only must name architectures from {list(archs)}, got {unknown[0]!r}")
        archs = {n: a for n, a in archs.items() if n in args.only}
    torch.set_num_threads(args.threads)
    if args.backends:
        print_machine(torch.device("cpu"), args.threads)
        run_backend_comparison(archs, args.backends, args)
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
        return
    print_settings(args)
    rows, walls = measure_all(archs, args)
    print_table(rows, walls)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
