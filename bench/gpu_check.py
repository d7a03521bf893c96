"""GPU check: latency repeatability, the blocks' CUDA rows, and a 2-trial search that trains on CUDA.

For a machine with a CUDA GPU (the CPU-only machines this project is developed on cannot run
it; without CUDA it says so in one line and exits 2). Run from the repository root::

    python3 bench/gpu_check.py                          # a few minutes on one GPU, 16 at most
    python3 bench/gpu_check.py --data DATA.yaml --device 1

1. Latency repeatability: the stock YOLO26n and two rep architectures (RepViT, OREPA in every
   stage; ``bench/latency.py``'s table), each measured ``--latency-repeats`` times round-robin
   by ``measure_latency`` (torch backend: fused fp16 model replayed as a CUDA graph, CUDA
   events; ``nms_free`` head, ``--latency-imgsz`` 640 px). Per architecture: the repeats' medians, the within-run
   CV, the spread between repeats, whether their intervals overlap, the timing mode (``graph``
   expected), and whether every repeat ranks the architectures the same.
   Then the same three measured together, round-robin (``measure_interleaved``, as the search's
   end-of-search re-measure), ``--latency-repeats`` times: does the ranking hold? (On an H200 the
   separate measurements above moved stock by 13% between repeats and swapped it with OREPA.)
2. ``bench/bench_blocks.py --device cuda`` at small sizes (a subprocess; its table printed as is).
3. ``python -m search.run``: 2 trials (the stock baseline and one sampled) of a tiny space, 1 epoch
   at 128 px, training and latency on the GPU, on ``--data`` or a small set made by
   ``trainers.train.data.generate_synth``; the study is read back (states, mAP, latency
   device/dtype/mode, training device and time).
4. The CUDA latency model: ``python -m search.latency_model fit`` (``--predictor-archs``, 60) and
   ``validate`` (40 held out, 10 measured twice) at the default space's target on this GPU; the
   validation table (MAPE, tau against the re-measure noise floor) printed as is.

Ends with one summary table. Exit 0 when every check passed, 1 when one failed, 2 without CUDA.
Not a test: it prints numbers and the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainers.cli import OneLineParser, fail, log, positive_int

REPO = Path(__file__).resolve().parents[1]
SPREAD_OK = 0.05  # between-repeat spread of a CUDA-graph median above which latency is not repeatable
SPACE = """\
base: yolo26.yaml
scale: n
head: nms_free
stages:
  p3_backbone:
    block: [RepViT, OREPA, C3k2_RVB_SE]
    kernels: [[3], [3, 5]]
latency: {{imgsz: 640, device: auto, dtype: auto, backend: torch}}
train: {{epochs: 1, imgsz: {imgsz}, batch: {batch}}}
"""

Result = tuple[str, bool, str]  # (check, passed, figures)


def latency_repeatability(device: str, args: argparse.Namespace) -> list[Result]:
    """Each architecture ``--latency-repeats`` times, round-robin; one result per architecture plus the ranking."""
    from latency import architectures

    from trainers.latency.measure import measure_latency
    from trainers.latency.setting import LatencySetting
    from trainers.model.build import build_model

    archs = {k: v for k, v in architectures().items() if k in ("YOLO26n (stock)", "RepViT", "OREPA")}
    models = {name: build_model(arch, nc=80) for name, arch in archs.items()}
    reports: dict[str, list[Any]] = {name: [] for name in models}
    for r in range(args.latency_repeats):
        for name, model in models.items():
            setting = LatencySetting(imgsz=args.latency_imgsz, device=device, backend="torch", head="nms_free")
            report = measure_latency(model, setting)
            reports[name].append(report)
            log(f"  latency repeat {r + 1}/{args.latency_repeats} {name:16} {report.label()}")
    results = []
    for name, runs in reports.items():
        medians = [rep.median_ms for rep in runs]
        spread = max(medians) / min(medians) - 1
        overlap = all(a.overlaps(b) for a in runs for b in runs)
        modes = sorted({rep.mode for rep in runs})
        ok = spread <= SPREAD_OK and modes == ["graph"]
        results.append((f"latency {name}", ok,
                        f"medians {', '.join(f'{m:.3f}' for m in medians)} ms; cv within "
                        f"{100 * max(rep.cv for rep in runs):.1f}% (max); spread {100 * spread:.1f}% "
                        f"(limit {100 * SPREAD_OK:.0f}%); intervals overlap: {overlap}; mode {'/'.join(modes)}; "
                        f"{runs[0].dtype} b{runs[0].batch} {runs[0].imgsz}px"))

    def order(i: int) -> tuple[str, ...]:
        return tuple(sorted(reports, key=lambda name: reports[name][i].median_ms))

    orders = {order(i) for i in range(args.latency_repeats)}
    results.append(("latency ranking", len(orders) == 1,
                    "same order in every repeat: " + " < ".join(next(iter(orders))) if len(orders) == 1
                    else f"{len(orders)} different orders: " + "; ".join(" < ".join(o) for o in sorted(orders))))
    return results


def interleaved_ranking(device: str, args: argparse.Namespace) -> list[Result]:
    """The same three architectures measured together, round-robin (what the search's final re-measure does),
    ``--latency-repeats`` times: whether every repeat ranks them the same and how far medians move."""
    from latency import architectures

    from trainers.latency.interleaved import measure_interleaved
    from trainers.latency.setting import LatencySetting
    from trainers.model.build import build_model

    archs = {k: v for k, v in architectures().items() if k in ("YOLO26n (stock)", "RepViT", "OREPA")}
    models = [build_model(arch, nc=80) for arch in archs.values()]
    setting = LatencySetting(imgsz=args.latency_imgsz, device=device, head="nms_free")
    runs = []
    for r in range(args.latency_repeats):
        reports = measure_interleaved(models, setting, rounds=10, repeats=3)
        runs.append(dict(zip(archs, reports)))
        log(f"  interleaved repeat {r + 1}: " + ", ".join(f"{k} {v.median_ms:.3f}" for k, v in runs[-1].items()))
    orders = {tuple(sorted(run, key=lambda k: run[k].median_ms)) for run in runs}
    spreads = {k: max(run[k].median_ms for run in runs) / min(run[k].median_ms for run in runs) - 1 for k in archs}
    return [("latency interleaved ranking", len(orders) == 1,
             f"{len(orders)} order(s) over {len(runs)} repeats: " + "; ".join(" < ".join(o) for o in sorted(orders))
             + "; median spread " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in spreads.items()))]


def blocks_rows(device: str, timeout: float) -> Result:
    """``bench/bench_blocks.py --device cuda`` at small sizes; its output printed as is."""
    cmd = [sys.executable, str(REPO / "bench" / "bench_blocks.py"), "--device", device, "--channels", "64",
           "--size", "40", "--repeats", "50", "--warmup", "10", "--train-batches", "1", "4", "--train-repeats", "3"]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "bench_blocks CUDA rows", False, f"timed out after {timeout:.0f} s"
    print("\n## bench/bench_blocks.py " + " ".join(cmd[2:]))
    print(r.stdout.rstrip())
    rows = sum(_is_block_row(line) for line in r.stdout.splitlines())
    eager = r.stderr.count("CUDA graph capture failed")
    detail = (f"rc {r.returncode}, {rows} block rows, {eager} blocks timed eager (graph capture failed), "
              f"{time.perf_counter() - t0:.0f} s")
    if r.returncode != 0:
        detail += "; stderr: " + " ".join(r.stderr.strip().splitlines()[-3:])
    return "bench_blocks CUDA rows", r.returncode == 0 and rows > 0, detail


def _is_block_row(line: str) -> bool:
    """Whether ``line`` is a row of bench_blocks' latency table (it ends with a speedup such as ``1.84x``)."""
    last = line.split()[-1] if line.strip() else ""
    return not line.startswith("#") and last.endswith("x") and last[:-1].replace(".", "", 1).isdigit()


def tiny_data(args: argparse.Namespace, tmp: Path) -> str:
    """``--data``, else a small synthetic set (``trainers.train.data.generate_synth``) under ``tmp``."""
    if args.data:
        return str(Path(args.data).resolve())
    from trainers.train.data import generate_synth

    return str(generate_synth(tmp / "synth", seed=0, n_train=64, n_val=16, size=args.imgsz, progress=log))


def search_trials(device: str, args: argparse.Namespace, tmp: Path, timeout: float) -> list[Result]:
    """Two trials of a tiny space with CUDA training and latency; the study read back."""
    space = tmp / "gpu_check.yaml"
    space.write_text(SPACE.format(imgsz=args.imgsz, batch=args.batch))
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--trials", "2", "--device", args.device,
           "--studies-dir", str(tmp / "studies"), "--data", tiny_data(args, tmp), "--study", "gpu_check"]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                           env={**os.environ, "YOLO_OFFLINE": "1", "REPNAS_LOCK_DIR": str(tmp / "locks")})
    except subprocess.TimeoutExpired:
        return [("search 2 trials", False, f"timed out after {timeout:.0f} s")]
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return [("search 2 trials", False, f"rc {r.returncode} after {wall:.0f} s: "
                 + " ".join(r.stderr.strip().splitlines()[-3:]))]
    import optuna

    from search.study.records import read_record

    study = optuna.load_study(study_name="gpu_check", storage=f"sqlite:///{tmp / 'studies' / 'gpu_check.db'}")
    trials = study.trials  # the first is the stock model (the study's baseline), the second a sampled one
    results = [("search 2 trials", len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials),
                f"rc 0, {len(trials)} trials ({', '.join(t.state.name for t in trials)}), {wall:.0f} s wall")]
    for t in trials:
        lat, ua = read_record(t, "latency", {}), t.user_attrs
        on_gpu = "cpu" not in str(lat.get("device", "cpu")) and str(ua.get("device", "cpu")) not in ("cpu", "")
        name = f"search trial {t.number}" + (" (baseline)" if ua.get("baseline") else "")
        results.append((name, t.state.name == "COMPLETE" and on_gpu,
                        f"{ua.get('blocks', '?')}: mAP50-95 {ua.get('map50_95', float('nan')):.4f}, latency "
                        f"{lat.get('median_ms', float('nan')):.3f} ms {lat.get('mode')} {lat.get('dtype')} on "
                        f"{lat.get('device')}; trained on {ua.get('device')} in {ua.get('train_seconds', 0):.0f} s"
                        + (f"; {ua['fail_reason']}" if "fail_reason" in ua else "")))
    return results


def latency_model_fit(args: argparse.Namespace, tmp: Path, timeout: float) -> list[Result]:
    """``python -m search.latency_model fit`` then ``validate`` for the default space's CUDA target (fused fp16,
    CUDA graph): ``--predictor-archs`` fit, two thirds of that held out, a quarter of those measured twice."""
    n = args.predictor_archs
    common = ["--space", str(REPO / "spaces" / "yolo26.yaml"), "--studies-dir", str(tmp / "studies")]
    env = {**os.environ, "YOLO_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": args.device}
    results: list[Result] = []
    for command, extra in (("fit", ["--archs", str(n)]), ("validate", ["--archs", str(2 * n // 3),
                                                                         "--twice", str(max(2, n // 6))])):
        t0 = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "search.latency_model", command, *common, *extra],
                               capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return results + [(f"latency model {command}", False, f"timed out after {timeout:.0f} s")]
        print(f"\n## python -m search.latency_model {command} {' '.join(extra)}\n{r.stdout.rstrip()}")
        tail = " ".join(r.stderr.strip().splitlines()[-2:])
        results.append((f"latency model {command}", r.returncode == 0,
                        f"rc {r.returncode}, {time.perf_counter() - t0:.0f} s; {tail}"))
        if r.returncode != 0:
            break
    return results


def print_summary(results: list[Result]) -> None:
    """The one summary table: check, ok, figures."""
    width = max(len(name) for name, _, _ in results)
    print(f"\n## summary\n{'check':{width}}  ok    figures")
    for name, ok, detail in results:
        print(f"{name:{width}}  {'yes' if ok else 'NO ':3}   {detail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line settings, validated before torch is imported."""
    p = OneLineParser(prog="bench/gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="0", help="the CUDA device index (default 0)")
    p.add_argument("--data", help="Ultralytics data YAML for the search (default: a small generated set)")
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=128, help="training size")
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=16, help="training batch")
    p.add_argument("--latency-repeats", type=positive_int("--latency-repeats", 2, 100), default=3)
    p.add_argument("--latency-imgsz", type=positive_int("--latency-imgsz", 32, 4096), default=640)
    p.add_argument("--predictor-archs", type=positive_int("--predictor-archs", 30, 1000), default=60,
                   help="architectures of the CUDA latency model's fit (validation: 2/3 of it)")
    p.add_argument("--skip", nargs="+", choices=["latency", "blocks", "search", "predictor"], default=[],
                   help="checks to skip")
    args = p.parse_args(argv)
    if not args.device.isdigit():
        fail(f"--device must be a CUDA device index (0, 1, ...), got {args.device!r}")
    for flag, size in (("--imgsz", args.imgsz), ("--latency-imgsz", args.latency_imgsz)):
        if size % 32:
            fail(f"{flag} must be a multiple of 32, got {size}")
    if args.data and not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks in order, print the summary; the exit code says whether all passed."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__} sees none): nothing to check")
        return 2
    if int(args.device) >= torch.cuda.device_count():
        fail(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    from machine import print_machine

    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    device = f"cuda:{args.device}"
    print_machine(torch.device(device))
    t0 = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        os.environ.setdefault("REPNAS_LOCK_DIR", str(Path(tmp) / "locks"))
        if "latency" not in args.skip:
            results += latency_repeatability(device, args)
            results += interleaved_ranking(device, args)
        if "blocks" not in args.skip:
            results.append(blocks_rows(device, timeout=150))
        if "search" not in args.skip:
            results += search_trials(device, args, Path(tmp), timeout=max(60.0, 420 - (time.perf_counter() - t0)))
        if "predictor" not in args.skip:
            results += latency_model_fit(args, Path(tmp), timeout=240)
    print_summary(results)
    print(f"# total {time.perf_counter() - t0:.0f} s")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
