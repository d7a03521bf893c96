"""Benchmark: finished trials per minute with 1, 2 and 4 workers sharing a PostgreSQL study.

Starts a throwaway PostgreSQL server (as ``tests/search/pg_server.py`` does), then for each
worker count runs that many ``python -m search.run`` processes on one study of a tiny space
(coco8 copy, 1 epoch at 64 px) and reports wall time, finished trials per minute, and lost or
duplicated trials (lost: still RUNNING/WAITING or fewer finished than the target; duplicated:
the same architecture trained twice, or a trial number seen twice). Prints the machine.

Run from the repository root::

    python3 bench/workers.py [--trials 8] [--workers 1 2 4] [--data DATA.yaml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from machine import print_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "search"))  # pg_server.py, the tests' throwaway PostgreSQL server

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT, OREPA, C3k2_RVB_SE], kernels: [[3], [3, 5], [3, 5, 7]]}
  p4_backbone: {block: [C3k2, RepViT, OREPA], kernels: [[3], [3, 5]]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 1, imgsz: 64, batch: 4}
"""


def run_config(n_workers: int, trials: int, url: str, data: str, tmp: Path) -> dict[str, float | int]:
    """Run ``n_workers`` workers on one study of ``trials`` trials: wall time, trials/min, lost and duplicated."""
    import optuna

    from search.study import is_finished

    name = f"bench_w{n_workers}"
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--data", data, "--trials", str(trials),
           "--storage", url, "--study", name, "--studies-dir", str(tmp / "studies"), "--device", "cpu"]
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    t0 = time.time()
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(n_workers)]
    codes = [p.wait() for p in procs]
    wall = time.time() - t0
    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if is_finished(t)]
    open_ = [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    trained = Counter(t.user_attrs.get("hash") for t in study.trials
                      if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs)
    numbers = Counter(t.number for t in study.trials)
    return {"workers": n_workers, "exit_codes_ok": int(all(c == 0 for c in codes)), "wall_s": round(wall, 1),
            "finished": len(finished), "per_min": round(60 * len(finished) / wall, 2),
            "lost": len(open_) + max(0, trials - len(finished)),
            "duplicated": sum(c - 1 for c in trained.values()) + sum(c - 1 for c in numbers.values())}


def main() -> None:
    """Start PostgreSQL, run each worker count in turn and print the machine and one row per count."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "coco8" / "coco8.yaml"))
    args = p.parse_args()
    from pg_server import PostgresServer

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    data_dir = tmp / "data"
    shutil.copytree(Path(args.data).parent, data_dir)
    data = str(data_dir / Path(args.data).name)
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="bench-pg-"))).start()  # its own dir: postgres owns it
    print_machine()
    print(f"# PostgreSQL at {server.url}; {args.trials} trials per study (1 epoch, 64 px, coco8)")
    print(f"{'workers':>7} {'wall s':>8} {'finished':>8} {'trials/min':>10} {'lost':>5} {'dup':>4} {'ok':>3}")
    try:
        for n in args.workers:
            r = run_config(n, args.trials, server.url, data, tmp)
            print(f"{r['workers']:>7} {r['wall_s']:>8} {r['finished']:>8} {r['per_min']:>10} {r['lost']:>5} "
                  f"{r['duplicated']:>4} {r['exit_codes_ok']:>3}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
