"""Benchmark: finished trials per minute with several workers on one PostgreSQL study, on one machine and on
a multi-node Ray cluster, and what a node lost mid-run costs.

Starts a throwaway PostgreSQL server (``tests/search/pg_server.py``), then on one study per row of a tiny
space (coco8 copy, 1 epoch at 64 px, ``--trials`` each):

- ``pg N``: N ``python -m search.run`` processes sharing the study (the Optuna backend);
- ``ray N``: a Ray cluster of N nodes on this machine (Ray's multi-node harness, one CPU per node:
  one trial per node at a time) and one ``search.run --backend ray --workers N --ray-address ...``;
- ``fault``: the 2-node cluster again, its worker node killed (all its processes at once) while a
  trial trains on it.

Each row reports wall time, finished trials per minute, the nodes the finished trials ran on, the trials
re-run after a lost worker (``retried``), and lost or duplicated trials (lost: still RUNNING/WAITING, or
fewer finished than the target; duplicated: the same architecture trained to the end twice, or a trial
number seen twice). Prints the machine.

Run from the repository root::

    python3 bench/workers.py [--trials 8] [--workers 1 2 4] [--ray-nodes 1 2] [--fault] [--data DATA.yaml]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import print_machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "search"))  # pg_server.py, fault_helpers.py: the tests' servers and faults

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT, OREPA, C3k2_RVB_SE], kernels: [[3], [3, 5], [3, 5, 7]]}
  p4_backbone: {block: [C3k2, RepViT, OREPA], kernels: [[3], [3, 5]]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 1, imgsz: 64, batch: 4}
"""
COLUMNS = ("row", "wall s", "finished", "trials/min", "nodes", "retried", "lost", "dup", "ok")


def search_command(name: str, trials: int, url: str, data: str, tmp: Path, *extra: str) -> list[str]:
    """The ``search.run`` command line of one study of the benchmark."""
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    return [sys.executable, "-m", "search.run", "--space", str(space), "--data", data, "--trials", str(trials),
            "--storage", url, "--study", name, "--studies-dir", str(tmp / "studies"), "--device", "cpu", *extra]


def study_row(row: str, name: str, trials: int, url: str, wall: float, ok: bool) -> dict[str, Any]:
    """The numbers of one finished study: finished, per minute, nodes, retried, lost, duplicated."""
    import optuna

    from search.study.storage import is_finished

    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if is_finished(t)]
    open_ = [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    trained = Counter(t.user_attrs.get("hash") for t in study.trials
                      if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs)
    numbers = Counter(t.number for t in study.trials)
    nodes = {t.user_attrs.get("ray_node") for t in finished if t.user_attrs.get("ray_node")}
    return {"row": row, "wall s": round(wall, 1), "finished": len(finished),
            "trials/min": round(60 * len(finished) / wall, 2), "nodes": len(nodes) or "-",
            "retried": sum("retry_of" in t.user_attrs for t in study.trials),
            "lost": len(open_) + max(0, trials - len(finished)),
            "dup": sum(c - 1 for c in trained.values()) + sum(c - 1 for c in numbers.values()), "ok": int(ok)}


def run_processes(n_workers: int, trials: int, url: str, data: str, tmp: Path) -> dict[str, Any]:
    """``pg N``: ``n_workers`` search.run processes (Optuna backend) on one study."""
    name = f"bench_w{n_workers}"
    cmd = search_command(name, trials, url, data, tmp)
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    t0 = time.time()
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for i in range(n_workers)]
    codes = [p.wait() for p in procs]
    return study_row(f"pg {n_workers}", name, trials, url, time.time() - t0, all(c == 0 for c in codes))


def run_cluster(nodes: int, trials: int, url: str, data: str, tmp: Path, fault: bool = False) -> dict[str, Any]:
    """``ray N`` (or ``fault``): one search.run on a Ray cluster of ``nodes`` nodes; with ``fault``, the worker
    node is killed while a trial trains on it."""
    from fault_helpers import LocalRayCluster, load_study, start_search, training_trial_on, wait_until

    name = f"bench_ray{nodes}" + ("_fault" if fault else "")
    cmd = search_command(name, trials, url, data, tmp, "--backend", "ray", "--workers", str(nodes))
    space_text = (tmp / "space.yaml").read_text()
    with LocalRayCluster(nodes=nodes, cpus=1) as cluster:
        t0 = time.time()
        proc, log = start_search(tmp, space_text, *cmd[cmd.index("--data"):], "--ray-address", cluster.address,
                                 log_name=f"{name}.log")
        if fault:
            worker = cluster.node_ids[1]
            wait_until("a trial training on the worker node", lambda: training_trial_on(
                load_study(url, name), tmp / "studies" / name, worker, "trial "), proc, log, timeout=900)
            cluster.remove(worker)
        code = proc.wait()
        wall = time.time() - t0
    return study_row("fault" if fault else f"ray {nodes}", name, trials, url, wall, code == 0)


def main() -> None:
    """Start PostgreSQL, run each row in turn and print the machine and one line per row."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4], help="search.run processes per pg row")
    p.add_argument("--ray-nodes", type=int, nargs="*", default=[1, 2], help="Ray nodes per ray row")
    p.add_argument("--fault", action="store_true", help="add the row of a 2-node cluster losing a node mid-trial")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "coco8" / "coco8.yaml"))
    args = p.parse_args()
    from pg_server import PostgresServer

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    data_dir = tmp / "data"
    shutil.copytree(Path(args.data).parent, data_dir)
    data = str(data_dir / Path(args.data).name)
    pg_root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # its own dir: postgres owns it
    server = PostgresServer(pg_root).start()
    print_machine()
    print(f"# PostgreSQL at {server.url}; {args.trials} trials per study (1 epoch, 64 px, {Path(data).stem}); "
          "Ray nodes of 1 CPU each on this machine")
    print(" ".join(f"{c:>10}" for c in COLUMNS), flush=True)
    runs: list[Callable[[], dict[str, Any]]] = [
        functools.partial(run_processes, n, args.trials, server.url, data, tmp) for n in args.workers]
    runs += [functools.partial(run_cluster, n, args.trials, server.url, data, tmp) for n in args.ray_nodes]
    if args.fault:
        runs.append(functools.partial(run_cluster, 2, args.trials, server.url, data, tmp, fault=True))
    try:
        for run in runs:
            r = run()
            print(" ".join(f"{r[c]!s:>10}" for c in COLUMNS), flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    main()
