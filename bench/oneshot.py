"""Benchmark: does the one-shot supernet rank architectures as training them alone does, and what does it cost?

The evidence of issue 31 for ``search.run --mode oneshot``, at sizes given by flags:

1. ``--archs`` paths drawn uniformly from ``--space``'s supernet (``search.space.supernet.sample_path``,
   seed ``--seed``), plus the stock model;
2. the supernet trains ``--supernet-epochs`` (SPOS, as ``search.run --mode oneshot`` trains it;
   seconds per epoch reported);
3. each architecture is scored on it twice, without and with BatchNorm recalibration on
   ``--calib-images`` train images (``search.engine.oneshot.recalibration_ablation``), and its fused
   latency is measured as a search measures it (seconds per subnet evaluation reported);
4. each architecture trains alone ``--epochs`` at the same size and batch, with seeds
   ``--seed`` and ``--seed + 1`` (``python -m trainers.train.trial``, the search's trial process);
5. Kendall tau and Spearman rho of supernet mAP50-95 (with / without recalibration) against the
   stand-alone mAP50-95 of the first seed and of the seeds' mean, each with a bootstrap 95%
   interval over architectures (``--bootstrap`` resamples), beside the ceiling: the same between
   the two stand-alone seeds.

Prints a table per architecture, the rank table, the costs and the machine; writes every figure
to ``<root>/oneshot_bench.json``. The defaults (the small bench space, 5 + stock architectures, a
12-epoch supernet, 6 stand-alone epochs at 128 px on the embedded synthetic set) are sized for a
2-core CPU (about 20-25 minutes); at 64 px or fewer epochs every mAP sits near 0.00 and no ranking
can be read. The issue's evidence needs ``--archs 30`` and a longer schedule (a GPU: ``--device 0``).

    python3 bench/oneshot.py [--space S.yaml] [--data D.yaml] [--archs 5] [--supernet-epochs 12] [--epochs 6]
        [--imgsz 128] [--batch 8] [--calib-images 64] [--latency-imgsz 640] [--device cpu] [--root DIR] [--stock-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from machine import print_machine

from trainers.cli import OneLineParser, device_arg, fail, log, positive_int

REPO = Path(__file__).resolve().parents[1]
SMALL_SPACE = Path(__file__).resolve().parent / "spaces" / "oneshot_small.yaml"


def parse_args() -> argparse.Namespace:
    """The command line (checked before torch is imported)."""
    p = OneLineParser(prog="python3 bench/oneshot.py", description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(SMALL_SPACE), help="search space (default: bench/spaces/oneshot_small.yaml)")
    p.add_argument("--data", help="Ultralytics data YAML (default: the embedded synthetic set, generated once)")
    p.add_argument("--archs", type=positive_int("--archs", 2, 1000), default=5, help="sampled, stock added")
    p.add_argument("--supernet-epochs", type=positive_int("--supernet-epochs", 1, 10000), default=12)
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 10000), default=6, help="stand-alone epochs")
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=128)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=8)
    p.add_argument("--calib-images", type=positive_int("--calib-images", 1, 100000), default=64)
    p.add_argument("--latency-imgsz", type=positive_int("--latency-imgsz", 32, 4096), default=640)
    p.add_argument("--bootstrap", type=positive_int("--bootstrap", 100, 10**6), default=2000)
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 2), default=0)
    p.add_argument("--stock-only", action="store_true",
                   help="sanity check: train the supernet on the stock path only and score stock alone beside it "
                        "(the supernet's estimate should equal training it alone)")
    p.add_argument("--root", help="working folder (default: a temp dir); a rerun reuses its supernet and "
                   "every finished stand-alone training of the same schedule")
    args = p.parse_args()
    if args.data and not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    if not Path(args.space).is_file():
        fail(f"--space: no such file {args.space!r}")
    if args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    return args


def sample_architectures(spec: Any, count: int, seed: int) -> list[Any]:
    """Stock, then ``count`` distinct other paths of ``spec`` drawn uniformly (``ValueError`` if it has fewer)."""
    from search.space.supernet import sample_path
    from trainers.model.architecture import Architecture

    stock = Architecture.baseline(spec.base, spec.scale)
    if spec.paths() <= count:
        raise ValueError(f"--archs {count}: the supernet has only {spec.paths()} paths (stock among them)")
    rng, archs = random.Random(seed), {stock.hash: stock}
    while len(archs) < count + 1:
        arch = sample_path(spec, rng)
        archs.setdefault(arch.hash, arch)
    return list(archs.values())


def train_alone(arch: Any, out: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One stand-alone training (``python -m trainers.train.trial``); its result line (``ok: false`` on failure).

    A finished training is kept as ``out/result.json`` with its schedule and reused by a rerun with the same
    schedule, so a study grows across runs: ``--archs 29`` after ``--archs 9`` (same seed and root) draws the
    same 9 first and trains only the 20 new ones.
    """
    out.mkdir(parents=True, exist_ok=True)
    schedule = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "seed": seed,
                "device": args.device, "data": str(args.data)}
    kept = out / "result.json"
    if kept.is_file():
        saved = json.loads(kept.read_text())
        if saved.get("schedule") == schedule and saved.get("result", {}).get("ok"):
            return {**saved["result"], "reused": True}
    arch_file = out / "architecture.json"
    arch_file.write_text(arch.to_json())
    cmd = [sys.executable, "-m", "trainers.train.trial", "--arch", str(arch_file), "--data", args.data, "--epochs",
           str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device,
           "--out", str(out), "--latency-imgsz", "64", "--latency-device", "cpu", "--seed", str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "YOLO_OFFLINE": "1", "REPNAS_LOCK_DIR": str(out.parent / "locks")})
    try:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"ok": False, "reason": " ".join(r.stderr.strip().splitlines()[-2:])}
    if result.get("ok"):
        kept.write_text(json.dumps({"schedule": schedule, "result": result}))
    return result


def bootstrap_interval(stat: Callable[[Sequence[float], Sequence[float]], float], a: Sequence[float],
                       b: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``stat`` over ``resamples`` resamplings of the (a, b) pairs."""
    rng, n, values = random.Random(seed), len(a), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        values.append(stat([a[i] for i in idx], [b[i] for i in idx]))
    values.sort()
    return values[int(0.025 * (resamples - 1))], values[int(0.975 * (resamples - 1))]


def agreement(a: Sequence[float], b: Sequence[float], args: argparse.Namespace) -> dict[str, Any]:
    """Kendall tau and Spearman rho of ``a`` vs ``b`` with their bootstrap 95% intervals."""
    from search.pareto.ranks import kendall_tau, spearman_rho

    return {"tau": kendall_tau(a, b), "tau_ci": bootstrap_interval(kendall_tau, a, b, args.bootstrap, args.seed),
            "rho": spearman_rho(a, b), "rho_ci": bootstrap_interval(spearman_rho, a, b, args.bootstrap, args.seed)}


def train_the_supernet(spec: Any, args: argparse.Namespace, root: Path) -> tuple[Path, float | None]:
    """The supernet's weights and seconds per epoch (``None`` when ``root`` already held a finished one)."""
    import functools

    from search.space.supernet import sample_path
    from trainers.model.architecture import Architecture
    from trainers.train.supernet_trainer import SupernetSettings, supernet_spec_of, train_supernet, trained_supernet

    folder = root / ("supernet_stock_only" if args.stock_only else "supernet")  # never reused by the other
    settings = SupernetSettings(data=args.data, out=str(folder), epochs=args.supernet_epochs,
                                imgsz=args.imgsz, batch=args.batch, device=args.device, seed=args.seed)
    last, done = trained_supernet(settings.out)
    if last.is_file() and supernet_spec_of(last) != spec:
        fail(f"{last}: a supernet of another space or shape (or one from before width and depth became elastic); "
             "give another --root")
    t0 = time.time()
    stock = Architecture.baseline(spec.base, spec.scale)
    sample = (lambda rng: stock) if args.stock_only else functools.partial(sample_path, spec)  # stock only: a check
    weights = train_supernet(spec, settings, sample)
    return weights, None if done else (time.time() - t0) / args.supernet_epochs


def score_on_supernet(archs: Sequence[Any], weights: Path, args: argparse.Namespace, root: Path) -> list[dict]:
    """Per architecture: supernet mAP without and with recalibration, their seconds, the latency's seconds."""
    from search.engine.oneshot import load_supernet, recalibration_ablation
    from search.study.config import RunConfig
    from trainers.latency.setting import LatencySetting
    from trainers.model.build import build_model
    from trainers.train.dataset import class_count
    from trainers.train.results import TrialSettings
    from trainers.train.trial import measure_pre_training

    trial = TrialSettings(data=args.data, out=str(root / "scores"), epochs=args.epochs, imgsz=args.imgsz,
                          batch=args.batch, device=args.device, nc=class_count(args.data),
                          latency=LatencySetting(imgsz=args.latency_imgsz, device="cpu", dtype="float32"))
    cfg = RunConfig(study="bench", storage="", root=str(root), space_file=args.space, trial=trial)
    supernet, out = load_supernet(weights), []
    for i, arch in enumerate(archs, 1):
        scores = recalibration_ablation(supernet, arch, cfg, args.calib_images)
        t0 = time.time()
        pre = measure_pre_training(build_model(arch, nc=trial.nc), arch.hash, trial)
        out.append({"without": scores["without"], "with": scores["with"], "latency_ms": pre.latency.median_ms,
                    "latency_seconds": round(time.time() - t0, 3)})
        log(f"[{i}/{len(archs)}] {arch.hash} supernet mAP50-95 {scores['without']['map50_95']:.4f} without, "
            f"{scores['with']['map50_95']:.4f} with recalibration; latency {pre.latency.median_ms:.1f} ms")
    return out


def print_tables(archs: Sequence[Any], scores: Sequence[dict], alone: Sequence[Sequence[dict]],
                 args: argparse.Namespace) -> dict[str, Any]:
    """The per-architecture table and the rank table; the rank figures."""
    print(f"\n{'arch':<13} {'no recal':>8} {'recal':>7} {f'alone s{args.seed}':>8} {f'alone s{args.seed + 1}':>8}"
          "  blocks")
    for arch, s, runs in zip(archs, scores, zip(*alone)):
        cells = [f"{r['map50_95']:.4f}" if r.get("ok") else "FAIL" for r in runs]
        stock = " (stock)" if arch.is_baseline else ""
        print(f"{arch.hash:<13} {s['without']['map50_95']:>8.4f} {s['with']['map50_95']:>7.4f} {cells[0]:>8} "
              f"{cells[1]:>8}  {arch.blocks_summary()}{stock}")
    ok = [i for i in range(len(archs)) if all(runs[i].get("ok") for runs in alone)]
    if len(ok) < 3:
        print(f"# only {len(ok)} architectures trained alone with both seeds: no rank figures")
        return {}
    first, second = ([alone[k][i]["map50_95"] for i in ok] for k in (0, 1))
    mean = [(x + y) / 2 for x, y in zip(first, second)]
    recal, plain = ([scores[i][k]["map50_95"] for i in ok] for k in ("with", "without"))
    pairs = {f"supernet, recalibrated BN vs alone seed {args.seed}": (recal, first),
             f"supernet, no recalibration vs alone seed {args.seed}": (plain, first),
             "supernet, recalibrated BN vs alone mean of 2 seeds": (recal, mean),
             "supernet, no recalibration vs alone mean of 2 seeds": (plain, mean),
             f"ceiling: alone seed {args.seed} vs alone seed {args.seed + 1}": (first, second)}
    figures = {name: agreement(a, b, args) for name, (a, b) in pairs.items()}
    print(f"\nRank agreement over {len(ok)} architectures (bootstrap 95% intervals, {args.bootstrap} resamples):")
    print(f"{'pair':<54} {'Kendall tau':>21} {'Spearman rho':>21}")
    for name, f in figures.items():
        print(f"{name:<54} {f['tau']:+.2f} [{f['tau_ci'][0]:+.2f}, {f['tau_ci'][1]:+.2f}]    "
              f"{f['rho']:+.2f} [{f['rho_ci'][0]:+.2f}, {f['rho_ci'][1]:+.2f}]")
    return figures


def print_costs(per_epoch: float | None, scores: Sequence[dict], alone: Sequence[Sequence[dict]],
                args: argparse.Namespace) -> dict[str, Any]:
    """Supernet seconds per epoch, seconds per subnet evaluation, stand-alone seconds per epoch; the figures."""
    evals = [s["with"]["eval_seconds"] for s in scores]
    lats = [s["latency_seconds"] for s in scores]
    trained = [r["train_seconds"] / args.epochs for runs in alone for r in runs if r.get("ok")]
    costs = {"supernet_seconds_per_epoch": per_epoch, "subnet_eval_seconds_median": statistics.median(evals),
             "subnet_latency_seconds_median": statistics.median(lats),
             "alone_seconds_per_epoch_median": statistics.median(trained) if trained else None}
    epoch = f"{per_epoch:.1f} s" if per_epoch is not None else "not timed (reused)"
    print(f"\nCost: supernet {epoch} per epoch ({args.supernet_epochs} epochs at {args.imgsz} px, batch {args.batch}); "
          f"a subnet evaluation {costs['subnet_eval_seconds_median']:.1f} s (extraction + recalibration on "
          f"{args.calib_images} images + validation, median) + {costs['subnet_latency_seconds_median']:.1f} s "
          f"latency ({args.latency_imgsz} px, fused, 1 thread); a stand-alone training "
          + (f"{costs['alone_seconds_per_epoch_median']:.1f} s per epoch (median)" if trained else "-"))
    return costs


def main() -> None:
    """Sample, train the supernet, score, train alone, compare; print the tables, costs and machine."""
    args = parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="oneshot-bench-")).resolve()
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    if not args.data:
        from trainers.train.data import ensure_synth

        args.data = str(ensure_synth(root / "data" / "synth"))
    from search.space import SearchSpace
    from search.space.supernet import supernet_spec

    spec = supernet_spec(SearchSpace.load(args.space).spec)
    try:
        archs = sample_architectures(spec, args.archs, args.seed)[:1 if args.stock_only else None]
    except ValueError as e:
        fail(str(e))
    t0 = time.time()
    log(f"supernet of {args.space}: {spec.paths()} paths; {args.supernet_epochs} epochs at {args.imgsz} px")
    weights, per_epoch = train_the_supernet(spec, args, root)
    scores = score_on_supernet(archs, weights, args, root)
    alone = []
    for seed in (args.seed, args.seed + 1):
        runs = []
        for i, arch in enumerate(archs, 1):
            runs.append(train_alone(arch, root / f"alone_s{seed}" / arch.hash, args, seed))
            r = runs[-1]
            log(f"alone seed {seed} [{i}/{len(archs)}] {arch.hash}: "
                + (f"mAP50-95 {r['map50_95']:.4f}" if r.get("ok") else f"FAILED {r.get('reason')}")
                + (" (reused)" if r.get("reused") else ""))
        alone.append(runs)
    print(f"# {len(archs)} architectures ({args.archs} paths drawn uniformly, seed {args.seed}, + stock) of "
          f"{args.space} ({spec.paths()} paths); supernet {args.supernet_epochs} epochs, alone {args.epochs} epochs, "
          f"both at {args.imgsz} px batch {args.batch} on {args.data}; recalibration {args.calib_images} images")
    figures = print_tables(archs, scores, alone, args)
    costs = print_costs(per_epoch, scores, alone, args)
    (root / "oneshot_bench.json").write_text(json.dumps(
        {"args": vars(args), "archs": [a.to_dict() for a in archs], "scores": scores, "alone": alone,
         "ranks": figures, "costs": costs}, indent=1, default=str))
    print(f"# {time.time() - t0:.0f} s; figures in {root / 'oneshot_bench.json'}")
    import torch

    print_machine(torch.device("cuda:0" if args.device not in ("cpu", "auto") else "cpu"))


if __name__ == "__main__":
    main()
