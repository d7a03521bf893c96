"""Benchmark: hypervolume of TPE vs NSGA-II vs random search at a fixed small budget.

Runs ``python -m search.run`` once per (sampler, seed) with the same space, data, number of
trials, epochs and image size; all runs share one latency cache, so every study's reference
point (mAP 0, 2x the baseline's latency) is the same. Prints each run's hypervolume and, per
sampler, mean and spread, with the machine. Goal: the default (TPE) beats random search.

Run from the repository root::

    python3 bench/bench_search.py [--trials 10] [--seeds 0 1 2] [--epochs 10] [--data DATA.yaml]
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
from pathlib import Path

from machine import print_machine

REPO = Path(__file__).resolve().parents[1]


def run_one(sampler: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    """Run one study (``python -m search.run``) and return its hypervolume, front size, best mAP and wall time."""
    cmd = [sys.executable, "-m", "search.run", "--space", args.space, "--trials", str(args.trials), "--sampler",
           sampler, "--seed", str(seed), "--study", f"{sampler}_s{seed}", "--studies-dir", str(root)]
    for flag in ("data", "epochs", "imgsz"):
        if getattr(args, flag):
            cmd += [f"--{flag}", str(getattr(args, flag))]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "YOLO_OFFLINE": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"{sampler} seed {seed} failed: {r.stderr[-2000:]}")
    summary = json.loads((root / f"{sampler}_s{seed}" / "pareto.json").read_text())
    hv = (summary["hypervolume"] or {}).get("hypervolume", 0.0)
    best = max((row["map50_95"] for row in summary["front"]), default=0.0)
    return {"hypervolume": hv, "front": len(summary["front"]), "best_map": best, "wall_s": time.time() - t0}


def main() -> None:
    """Run every (sampler, seed) study, printing the machine, each run and the per-sampler summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "yolo26.yaml"))
    p.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "random"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int)
    p.add_argument("--imgsz", type=int)
    p.add_argument("--data")
    p.add_argument("--root", help="studies folder (default: a temp dir)")
    args = p.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-search-")).resolve()
    print_machine()
    print(f"# {args.trials} trials per study, epochs {args.epochs or 'space default'}, studies in {root}", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            r = run_one(sampler, seed, args, root)
            results.setdefault(sampler, []).append(r)
            print(f"{sampler:>7} seed {seed}: hypervolume {r['hypervolume']:.4f}, front {r['front']}, "
                  f"best mAP50-95 {r['best_map']:.3f}, {r['wall_s']:.0f} s", flush=True)
    print(f"\n{'sampler':>7} {'HV mean':>8} {'HV stdev':>8} {'runs':>4}")
    for sampler, rs in results.items():
        hvs = [r["hypervolume"] for r in rs]
        spread = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        print(f"{sampler:>7} {statistics.fmean(hvs):>8.4f} {spread:>8.4f} {len(hvs):>4}")


if __name__ == "__main__":
    main()
