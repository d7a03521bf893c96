"""Benchmark: does a teacher or a warm start improve short trials, and do they rank like a longer schedule?

What ``search.run --teacher baseline`` / ``--init-from baseline`` do, measured directly:

1. the stock YOLO26 trains ``--epochs`` epochs (the study's baseline trial 0): the teacher and
   the initialisation source;
2. ``--archs`` architectures sampled from ``--space`` (Optuna's random sampler, ``--seed``) each
   train four ways: ``plain`` (``--epochs``, from scratch), ``teacher`` (``--epochs``, distilled
   from 1 with Ultralytics' ``distill_model``/``dis`` = ``--distill-weight``), ``init``
   (``--epochs``, started from 1's matching tensors) and ``long`` (``--long-epochs`` plain,
   the higher fidelity the others are ranked against).

Every run is ``python -m trainers.train.trial`` (the search's own trial process), ``--parallel`` at a
time. Prints per architecture the four mAP50-95 figures, the inherited share, then per variant
the mean mAP gain over ``plain`` (with how many architectures gained) and Kendall tau / Spearman
rho against ``long``, and the machine. Defaults (embedded synthetic set at 128 px, 4
architectures, 6 vs 12 epochs) take about 20 minutes on a 2-core CPU; on a GPU use ``--device 0``.

    python3 bench/teacher_effect.py [--data D.yaml] [--archs 4] [--epochs 6] [--long-epochs 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from machine import print_machine

from trainers.cli import OneLineParser, device_arg, fail, log, non_negative_float, positive_int

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "teacher", "init", "long")


def run_trial(arch_file: Path, out: Path, args: argparse.Namespace, epochs: int, extra: list[str]) -> dict[str, Any]:
    """One ``python -m trainers.train.trial`` run; its result (``ok: false`` with the reason when it failed)."""
    cmd = [sys.executable, "-m", "trainers.train.trial", "--arch", str(arch_file), "--data", args.data, "--epochs",
           str(epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device,
           "--out", str(out), "--latency-imgsz", "64", "--latency-device", "cpu", "--seed", str(args.seed), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "YOLO_OFFLINE": "1", "REPNAS_LOCK_DIR": str(out.parent / "locks")})
    lines = r.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "reason": " ".join(r.stderr.strip().splitlines()[-2:])}


def architectures(args: argparse.Namespace) -> dict[str, Any]:
    """``--archs`` architectures drawn from the space (random sampler, ``--seed``), by hash."""
    import optuna

    from search.space import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load(args.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    archs: dict[str, Any] = {}
    while len(archs) < args.archs:
        arch = space.suggest(study.ask())
        archs.setdefault(arch.hash, arch)
    return archs


def summarise(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Per-variant gain over plain and rank agreement with the long schedule."""
    from search.pareto.ranks import kendall_tau, spearman_rho

    ok = [h for h, r in results.items() if all(r[v].get("ok") for v in VARIANTS)]
    if len(ok) < 2:
        print(f"# only {len(ok)} architecture(s) finished every variant: no summary")
        return
    long = [results[h]["long"]["map50_95"] for h in ok]
    print(f"\n{'variant':<8} {'mean mAP':>9} {'gain vs plain':>14} {'gained':>7} {'tau vs long':>12} "
          f"{'rho vs long':>12}")
    plain = [results[h]["plain"]["map50_95"] for h in ok]
    for v in ("plain", "teacher", "init"):
        vals = [results[h][v]["map50_95"] for h in ok]
        gains = [a - b for a, b in zip(vals, plain)]
        print(f"{v:<8} {statistics.mean(vals):9.4f} {statistics.mean(gains):+14.4f} "
              f"{sum(g > 0 for g in gains):>3}/{len(ok):<3} {kendall_tau(vals, long):+12.2f} "
              f"{spearman_rho(vals, long):+12.2f}")


def main() -> None:
    """Train the teacher, then every architecture four ways; print the table and the summary."""
    p = OneLineParser(prog="python3 bench/teacher_effect.py", description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(REPO / "spaces" / "yolo26.yaml"))
    p.add_argument("--data", help="Ultralytics data YAML (default: the embedded synthetic set, generated once)")
    p.add_argument("--archs", type=positive_int("--archs", 2, 100), default=4)
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 1000), default=6)
    p.add_argument("--long-epochs", type=positive_int("--long-epochs", 2, 10000), default=12)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=128)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=8)
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--distill-weight", type=non_negative_float("--distill-weight"), default=6.0)
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--parallel", type=positive_int("--parallel", 1, 64), default=1, help="trial processes at a time")
    p.add_argument("--root", help="working folder (default: a temp dir)")
    args = p.parse_args()
    if args.data and not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    root = Path(args.root or tempfile.mkdtemp(prefix="teacher-effect-")).resolve()
    if not args.data:
        from trainers.train.data import ensure_synth

        args.data = str(ensure_synth(root / "data" / "synth"))
    from trainers.model.architecture import Architecture

    t0 = time.time()
    base_file = root / "baseline.json"
    base_file.write_text(Architecture.baseline().to_json())
    base = run_trial(base_file, root / "baseline", args, args.epochs, [])
    if not base.get("ok"):
        fail(f"the baseline did not train: {base.get('reason')}")
    teacher = base["weights"]
    log(f"baseline (teacher and init source): mAP50-95 {base['map50_95']:.4f} after {args.epochs} epochs, {teacher}")
    archs = architectures(args)
    jobs = []
    for h, arch in archs.items():
        arch_file = root / f"{h}.json"
        arch_file.write_text(arch.to_json())
        jobs += [(h, "plain", arch_file, args.epochs, []),
                 (h, "teacher", arch_file, args.epochs, ["--teacher", teacher, "--distill-weight",
                                                         str(args.distill_weight)]),
                 (h, "init", arch_file, args.epochs, ["--init-from", teacher]),
                 (h, "long", arch_file, args.long_epochs, [])]
    results: dict[str, dict[str, dict[str, Any]]] = {h: {} for h in archs}

    def one(job: tuple[str, str, Path, int, list[str]]) -> None:
        h, variant, arch_file, epochs, extra = job
        results[h][variant] = run_trial(arch_file, root / f"{h}_{variant}", args, epochs, extra)
        r = results[h][variant]
        log(f"{h} {variant}: " + (f"mAP50-95 {r['map50_95']:.4f}" if r.get("ok") else f"FAILED {r.get('reason')}"))

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, jobs))
    print(f"# {args.archs} architectures of {args.space} (seed {args.seed}); {args.epochs} vs {args.long_epochs} "
          f"epochs at {args.imgsz} px on {args.data}; teacher/init: stock trained {args.epochs} epochs "
          f"(mAP50-95 {base['map50_95']:.4f}); distill weight {args.distill_weight}; device {args.device}")
    print(f"{'hash':<13} {'plain':>7} {'teacher':>8} {'init':>7} {'long':>7} {'inherited':>10}  blocks")
    for h, arch in archs.items():
        r = results[h]
        cells = [f"{r[v]['map50_95']:.4f}" if r[v].get("ok") else "FAIL" for v in VARIANTS]
        share = (r["init"].get("inherited") or {}).get("share")
        print(f"{h:<13} {cells[0]:>7} {cells[1]:>8} {cells[2]:>7} {cells[3]:>7} "
              f"{'-' if share is None else f'{share:.1%}':>10}  {arch.blocks_summary()}")
    summarise(results)
    print(f"# {time.time() - t0:.0f} s")
    import torch

    print_machine(torch.device("cuda:0" if args.device not in ("cpu", "auto") else "cpu"))


if __name__ == "__main__":
    main()
