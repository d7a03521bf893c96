"""Benchmark: does the default search beat random search, and one-shot both, at an equal budget of training epochs?

(The issue asked for ``bench/search.py``; a script of that name would shadow the ``search``
package when run as ``python bench/search.py``, since Python puts the script's folder first on
``sys.path``, hence ``bench_search.py``.)

Arms (each over ``--seeds``):

- ``random``: random sampler, every trial trains all its epochs (no rungs);
- ``default``: the default sampler (TPE), no rungs;
- ``default+rungs``: the default sampler with multi-objective successive halving (``--rungs``);
- ``oneshot``: ``search.run --mode oneshot`` (issue 31): a supernet trained for the budget less the
  stand-alone retraining of stock and ``--retrain-top`` front architectures (``--epochs`` each),
  ``--subnets`` architectures scored on it; its front is that of the retrained, on their stand-alone mAP.

Every study gets the same budget of *trained epochs*: ``search.run --epoch-budget`` starts no new
trial once the epochs its trials trained (the length of their per-epoch mAP; early-stopped trials
count what they trained, reused and pruned-before-training trials count 0) reach the budget (the
trials running then finish, so a study may end a little over it: the table shows the epochs). A
one-shot study spends it on supernet epochs plus retraining epochs; a supernet epoch trains every
candidate's share of the widest supernet and costs more seconds than a trial's epoch, so the wall
time of every study is printed beside it.
All studies share one studies folder, so one latency cache. Hypervolume is computed here for
every study in (mAP50-95, latency / the stock model's) against ONE reference point (0, 2.0),
on the figures of each study's end-of-search interleaved re-measure (the stock model and the
front measured together): studies run minutes apart on a shared CPU see different loads.
``--report`` prints the table of the studies already in ``--root`` without running any.

Defaults (sized for about 60 minutes on a 2-core CPU): the embedded synthetic set, 6 epochs per
trial at 128 px, a budget of 36 epochs per study (6 full trials, the stock baseline among them),
rungs at epochs 2 and 4 with eta 3, seeds 0 1 2. TPE's random start is sized from the budget
(``RunConfig.planned_trials``: 6 full trials -> 3 random), so its later trials are modelled.
At this size every arm sees only a handful of architectures: the table says what a small
budget buys, not how the samplers compare over a long search. Prints every study, then per arm
the hypervolume mean and stdev and the number of architectures explored, with the machine.

    python3 bench/bench_search.py [--arms random default default+rungs oneshot] [--epoch-budget 36] [--epochs 6]
        [--seeds 0 1 2] [--subnets 60] [--retrain-top 2] [--root DIR] [--report]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import print_machine

REPO = Path(__file__).resolve().parents[1]
ARMS: dict[str, list[str]] = {
    "random": ["--sampler", "random", "--rungs", ""],
    "default": ["--sampler", "tpe", "--rungs", ""],
    "default+rungs": ["--sampler", "tpe"],
    "oneshot": ["--mode", "oneshot"],
}
ONESHOT = "oneshot"


def trained_epochs(study: Any) -> int:
    """Epochs the study trained: its trials' (per-epoch mAP recorded; reused trials count 0), and for a
    one-shot study its supernet's epochs and its stand-alone retrainings' (each at its schedule)."""
    from search.pareto.standalone import standalone_map
    from search.study.config import RunConfig
    from search.study.records import read_record

    cfg = RunConfig.from_study(study)
    if cfg.mode == ONESHOT and cfg.oneshot is not None:
        retrained = standalone_map(study, cfg.trial.epochs, cfg.trial.imgsz)
        return cfg.oneshot.supernet_epochs + cfg.trial.epochs * len(retrained)
    return sum(len(read_record(t, "epoch_map", [])) for t in study.trials if "reused_from" not in t.user_attrs)


def supernet_epochs(args: argparse.Namespace) -> int:
    """The one-shot arm's supernet epochs: the budget less stock's and ``--retrain-top`` retrainings."""
    epochs = args.epoch_budget - (args.retrain_top + 1) * args.epochs
    if epochs < 1:
        sys.exit(f"--epoch-budget {args.epoch_budget} leaves no supernet epoch after retraining stock and "
                 f"--retrain-top {args.retrain_top} architectures for --epochs {args.epochs} each")
    return epochs


def study_name(arm: str, seed: int) -> str:
    """The study of one (arm, seed) run, e.g. ``default_rungs_s0``."""
    return f"{arm.replace('+', '_')}_s{seed}"


def arm_command(arm: str, seed: int, args: argparse.Namespace, root: Path) -> list[str]:
    """The ``search.run`` command line of one (arm, seed) study, spending ``--epoch-budget``."""
    name = study_name(arm, seed)
    cmd = [sys.executable, "-m", "search.run", "--space", args.space, "--seed", str(seed), "--study", name,
           "--studies-dir", str(root), "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), *ARMS[arm]]
    if args.data:
        cmd += ["--data", args.data]
    if arm == ONESHOT:
        return cmd + ["--supernet-epochs", str(supernet_epochs(args)), "--subnets", str(args.subnets),
                      "--retrain-top", str(args.retrain_top)]
    if arm == "default+rungs":
        cmd += ["--rungs", args.rungs]
    return cmd + ["--trials", "10000", "--epoch-budget", str(args.epoch_budget)]


def load(root: Path, name: str) -> Any:
    """The Optuna study ``name`` in ``root``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / f'{name}.db'}")


def run_arm(arm: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run one study until it has trained ``--epoch-budget`` epochs; the study, its epochs and wall time."""
    name = study_name(arm, seed)
    t0 = time.time()
    r = subprocess.run(arm_command(arm, seed, args, root), capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "YOLO_OFFLINE": "1"})
    if r.returncode == 1 and arm == ONESHOT and (root / f"{name}.db").is_file():
        # a stand-alone retraining failed (the run's exit 1): the study is scored on the others (none: stock's
        # missing, hypervolume 0) rather than losing every arm's table
        print(f"# {name}: a retraining failed, scored without it: {r.stderr.strip().splitlines()[-1:]}", flush=True)
    elif r.returncode != 0:
        raise RuntimeError(f"{name} failed: {r.stderr[-2000:]}")
    study = load(root, name)
    return {"study": study, "wall_s": time.time() - t0, "epochs": trained_epochs(study)}


def hypervolume(study: Any) -> tuple[float, int]:
    """Hypervolume of the study's front in (mAP50-95, latency / its baseline's), against (0, 2.0).

    Latency as a ratio to the stock model *measured together with it* (the end-of-search
    interleaved re-measure, ``latency@<target>``; a study without one falls back to the trials'
    own figures): studies run minutes apart on a shared CPU see different loads, and absolute
    milliseconds would rank the load, not the search. A one-shot study's front is that of its
    retrained architectures on their stand-alone mAP (the supernet estimates rank, they are not a
    model's accuracy), its latency ratio to its retrained stock. Also returns the distinct architectures.
    """
    from search.pareto import baseline_trial, hypervolume_2d, pareto_front, trial_metrics
    from search.pareto.standalone import standalone_map, standalone_rows
    from search.study.config import RunConfig
    from search.study.targets import read_target, targets

    cfg = RunConfig.from_study(study)
    measured = targets(study)
    latency = read_target(study, measured[0]) if len(measured) == 1 else None
    base = baseline_trial(study)
    explored = len({t.user_attrs.get("hash") for t in study.trials if t.user_attrs.get("hash")})
    if base is None:
        return 0.0, explored
    base_ms = trial_metrics(base, latency)["latency_ms"]
    if cfg.mode == ONESHOT:
        alone = standalone_map(study, cfg.trial.epochs, cfg.trial.imgsz)
        if base.number not in alone:
            return 0.0, explored
        rows = standalone_rows(study, alone, base.number, latency)
        pts = [(r["map50_95_alone"], r["latency_ms"] / base_ms) for r in rows if r["on_front"]]
        return hypervolume_2d(pts, (0.0, 2.0)), explored
    front = pareto_front(study, cfg.objectives, cfg.constraints, latency=latency)
    pts = [(trial_metrics(t, latency)["map50_95"], trial_metrics(t, latency)["latency_ms"] / base_ms) for t in front]
    return hypervolume_2d(pts, (0.0, 2.0)), explored


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Per arm: hypervolume mean and stdev over its seeds, architectures explored, epochs, wall time."""
    print("\n# hypervolume in (mAP50-95, latency / the study's stock model measured with it), reference (0, 2.0)")
    print(f"{'arm':>14} {'HV mean':>8} {'HV stdev':>8} {'archs mean':>10} {'epochs':>6} {'runs':>4}")
    for arm, rs in runs.items():
        hvs = [r["hv"] for r in rs]
        spread = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        print(f"{arm:>14} {statistics.fmean(hvs):>8.4f} {spread:>8.4f} "
              f"{statistics.fmean(r['explored'] for r in rs):>10.1f} "
              f"{statistics.fmean(r['epochs'] for r in rs):>6.1f} {len(rs):>4}")


def main() -> None:
    """Run every (arm, seed) study; print each and the per-arm summary with the machine."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=str(REPO / "spaces" / "yolo26.yaml"))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epoch-budget", type=int, default=36)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--rungs", default="2,4")
    p.add_argument("--subnets", type=int, default=60, help="oneshot: architectures scored on the supernet")
    p.add_argument("--retrain-top", type=int, default=2, help="oneshot: front architectures retrained with stock")
    p.add_argument("--data")
    p.add_argument("--root", help="studies folder (default: a temp dir)")
    p.add_argument("--report", action="store_true", help="only report the studies already in --root")
    args = p.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bench-search-")).resolve()
    print_machine()
    print(f"# budget {args.epoch_budget} trained epochs per study; {args.epochs} epochs per trial at {args.imgsz} px; "
          f"rungs {args.rungs}; studies in {root}", flush=True)
    if ONESHOT in args.arms:
        print(f"# oneshot: {supernet_epochs(args)} supernet epochs, {args.subnets} subnets scored, stock and "
              f"{args.retrain_top} front architectures retrained for {args.epochs} epochs", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:  # seeds outer: a run cut short still compares every arm on the same seeds
        for arm in args.arms:
            name = study_name(arm, seed)
            if args.report:
                if not (root / f"{name}.db").is_file():
                    continue
                run = {"study": load(root, name), "wall_s": float("nan")}
                run["epochs"] = trained_epochs(run["study"])
            else:
                run = run_arm(arm, seed, args, root)
            run["hv"], run["explored"] = hypervolume(run["study"])
            runs.setdefault(arm, []).append(run)
            print(f"{arm:>14} seed {seed}: hypervolume {run['hv']:.4f}, {run['explored']} architectures, "
                  f"{run['epochs']} epochs trained, {run['wall_s']:.0f} s", flush=True)
    report(runs)


if __name__ == "__main__":
    main()
