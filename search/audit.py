"""``python -m search.audit``: does the search's cheap mAP rank architectures as a longer schedule does?

    python -m search.audit --storage sqlite:///studies/yolo26.db --study yolo26 --top 3 --random 3 --epochs 24

Retrains the front's ``--top`` points with the largest hypervolume contribution and ``--random``
other COMPLETE trials (distinct architectures) at the higher fidelity (``--epochs``, ``--imgsz``,
``--data``), and the same architectures at the search's own fidelity with ``--seeds`` other
seeds. Prints, per architecture, the search-time mAP, the audit mAP and the seed spread (max -
min of the search-fidelity mAPs over all seeds), then Kendall's tau and Spearman's rho between
search-time and audit mAP. The result is recorded on the study (user attr ``audit``), and the
median seed spread as user attr ``map_seed_spread``; the Pareto table then shows mAP as
``value+-spread``, marks mAP differences inside it as ties (``~``) and says a point beats stock
only beyond it.

A one-shot study (``--mode oneshot``) is audited the same way, and the question becomes whether the
supernet ranks architectures as training them alone does, on the user's own data: the search-time mAP is
the supernet estimate, the seed spread is that of ``--seeds`` stand-alone trainings at the study's train
schedule (the estimate is not one of them), and no ``map_seed_spread`` is recorded (the Pareto table's
figures are estimates, which no stand-alone spread describes).

Each run is a trial process (:func:`search.engine.runner.run_trial_process`) handed the trial's own
params/GFLOPs/latency, so nothing is measured again; runs land in ``<study folder>/audit/``.
"""

from __future__ import annotations

import datetime
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from search.pareto.report import SPREAD_ATTR
from search.pareto.standalone import SUPERNET
from search.pick import PickError
from search.study.records import read_record
from trainers.cli import OneLineParser, fail, log, positive_int

AUDIT_ATTR = "audit"


def hypervolume_contributions(front: list[Any], ref: tuple[float, float]) -> dict[int, float]:
    """Each front trial's hypervolume contribution in (mAP50-95, latency ms): the area lost without it."""
    from search.pareto import hypervolume_2d, trial_metrics

    pts = {t.number: (trial_metrics(t)["map50_95"], trial_metrics(t)["latency_ms"]) for t in front}
    whole = hypervolume_2d(list(pts.values()), ref)
    return {n: whole - hypervolume_2d([p for m, p in pts.items() if m != n], ref) for n in pts}


def choose_trials(study: Any, cfg: Any, top: int, random_k: int, seed: int) -> list[Any]:
    """The ``top`` front trials by hypervolume contribution, then ``random_k`` other COMPLETE architectures."""
    from optuna.trial import TrialState

    from search.pareto import baseline_trial, pareto_front, trial_metrics

    front = pareto_front(study, cfg.objectives, cfg.constraints)
    base = baseline_trial(study)
    ref_latency = 2 * trial_metrics(base)["latency_ms"] if base else 2 * max(trial_metrics(t)["latency_ms"]
                                                                              for t in front)
    gains = hypervolume_contributions(front, (0.0, ref_latency))
    chosen = sorted(front, key=lambda t: (-gains[t.number], t.number))[:top]
    seen = {t.user_attrs["hash"] for t in chosen}
    others: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("hash") not in seen and read_record(t, "architecture") is not None:
            others.setdefault(t.user_attrs["hash"], t)
    pool = sorted(others.values(), key=lambda t: t.number)
    return chosen + random.Random(seed).sample(pool, min(random_k, len(pool)))


def _train(trial: Any, settings: Any, label: str) -> float:
    """Train the trial's architecture with ``settings`` in a trial process; its final mAP50-95 (NaN on failure)."""
    from search.engine.runner import run_trial_process
    from search.pareto.front import latency_report
    from trainers.model.architecture import Architecture
    from trainers.train.results import PreTraining, TrialFailure, TrialJob

    report = latency_report(trial)
    assert report is not None, f"trial {trial.number} has no latency record"
    pre = PreTraining(trial.user_attrs["params"], trial.user_attrs["gflops"], report)
    job = TrialJob(Architecture.from_dict(read_record(trial, "architecture")), settings, pre)
    result = run_trial_process(job, prefix=f"[audit {label}] ")
    if isinstance(result, TrialFailure):
        log(f"[audit {label}] failed ({result.kind}): {result.reason}")
        return float("nan")
    log(f"[audit {label}] mAP50-95 {result.map50_95:.4f}")
    return result.map50_95


def audit(study: Any, cfg: Any, trials: list[Any], epochs: int, imgsz: int | None, data: str | None,
          seeds: int) -> dict[str, Any]:
    """Retrain ``trials`` at the audit fidelity and at the search's with other seeds; the record of it.

    In a one-shot study the search's mAP is a supernet estimate: the seed spread is over the stand-alone seeds only.
    """
    from search.pareto import trial_metrics
    from search.pareto.ranks import kendall_tau, spearman_rho
    from search.pareto.standalone import is_estimate

    folder = cfg.folder / "audit"
    high = replace(cfg.trial, epochs=epochs, imgsz=imgsz or cfg.trial.imgsz, data=data or cfg.trial.data,
                   latency_cache=None)
    rows = []
    for t in trials:
        tag = f"trial_{t.number:04d}_{t.user_attrs['hash']}"
        audit_map = _train(t, replace(high, out=str(folder / tag / f"e{epochs}")), f"{tag} e{epochs}")
        estimate = is_estimate(t)
        search_map = trial_metrics(t)["map50_95"]
        seed_maps = [] if estimate else [search_map]
        for s in range(1, seeds + 1):
            low = replace(cfg.trial, seed=cfg.trial.seed + s, latency_cache=None,
                          out=str(folder / tag / f"e{cfg.trial.epochs}_seed{cfg.trial.seed + s}"))
            seed_maps.append(_train(t, low, f"{tag} seed {cfg.trial.seed + s}"))
        ok = [m for m in seed_maps if m == m]
        rows.append({"trial": t.number, "hash": t.user_attrs["hash"], "blocks": t.user_attrs.get("blocks"),
                     "search_map": search_map, "source": SUPERNET if estimate else "trained",
                     "audit_map": audit_map, "seed_maps": seed_maps,
                     "seed_spread": max(ok) - min(ok) if len(ok) > 1 else None})
    scored = [r for r in rows if r["audit_map"] == r["audit_map"]]
    pairs = ([r["search_map"] for r in scored], [r["audit_map"] for r in scored])
    spreads = [r["seed_spread"] for r in rows if r["seed_spread"] is not None]
    oneshot = any(r["source"] == SUPERNET for r in rows)
    return {"epochs": epochs, "imgsz": high.imgsz, "data": high.data, "search_epochs": cfg.trial.epochs,
            "search_source": SUPERNET if oneshot else "trained", "seeds": seeds, "rows": rows,
            "kendall_tau": kendall_tau(*pairs) if len(scored) >= 2 else None,
            "spearman_rho": spearman_rho(*pairs) if len(scored) >= 2 else None,
            "map_noise": statistics.median(spreads) if spreads else None,
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def seed_spread_record(record: dict[str, Any], imgsz: int) -> dict[str, Any]:
    """The study's ``map_seed_spread`` attr: the audit's median seed spread of mAP50-95 and where it was measured.

    The Pareto report shows mAP as ``value +- map50_95`` and calls a point better than stock
    only beyond it (:func:`search.pareto.report.beats_stock`).
    """
    measured = [r for r in record["rows"] if r["seed_spread"] is not None]
    return {"map50_95": record["map_noise"], "epochs": record["search_epochs"], "imgsz": imgsz,
            "seeds": record["seeds"] + 1, "architectures": len(measured), "at": record["at"],
            "per_architecture": {str(r["trial"]): r["seed_spread"] for r in measured}}


def record_audit(study: Any, record: dict[str, Any], imgsz: int) -> None:
    """Store the audit on the study (``audit``) and, for a per-trial study, its seed spread (``map_seed_spread``,
    which the Pareto table reads); a one-shot study's spread describes stand-alone trainings, not its estimates."""
    study.set_user_attr(AUDIT_ATTR, record)
    if record["map_noise"] is not None and record.get("search_source") != SUPERNET:
        study.set_user_attr(SPREAD_ATTR, seed_spread_record(record, imgsz))


def format_audit(record: dict[str, Any]) -> str:
    """The audit as a table plus the rank agreement."""
    e, se = record["epochs"], record["search_epochs"]
    oneshot = record.get("search_source") == SUPERNET
    searched = "supernet" if oneshot else f"mAP @{se}ep"
    head = f"{'trial':>5} {'hash':<12} {searched:>10} {f'mAP @{e}ep':>10} {'seed spread':>11}  blocks"
    lines = [head, "-" * len(head)]
    for r in record["rows"]:
        spread = f"{r['seed_spread']:.4f}" if r["seed_spread"] is not None else "-"
        lines.append(f"{r['trial']:>5} {r['hash']:<12} {r['search_map']:>10.4f} {r['audit_map']:>10.4f} "
                     f"{spread:>11}  {r['blocks']}")
    tau, rho = record["kendall_tau"], record["spearman_rho"]
    against = "supernet estimate" if oneshot else f"search {se} epochs"
    lines.append(f"Kendall tau {tau:+.3f}, Spearman rho {rho:+.3f} ({against} vs audit {e} epochs stand-alone)"
                 if tau is not None else "too few architectures scored for a rank agreement")
    if record["map_noise"] is not None:
        where = f"stand-alone at {se} epochs" if oneshot else "at the search's fidelity"
        lines.append(f"median seed spread of mAP50-95 {where}: {record['map_noise']:.4f}")
    return "\n".join(lines)


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m search.audit", description=__doc__)
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--top", type=positive_int("--top", 0, 100), default=3)
    p.add_argument("--random", type=positive_int("--random", 0, 100), default=3)
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 10000), required=True)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096))
    p.add_argument("--data", help="data YAML (default: the study's)")
    p.add_argument("--seeds", type=positive_int("--seeds", 0, 20), default=2,
                   help="other seeds at the search's own fidelity (default 2)")
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0, help="for the random choice")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 done, 2 bad input."""
    args = _parser().parse_args(argv)
    if args.imgsz is not None and args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    if args.data is not None and not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    if args.top + args.random < 2:
        fail(f"--top + --random must be at least 2 for a rank agreement, got {args.top + args.random}")
    from search.pick import load_study
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    try:
        study, cfg = load_study(args.storage, args.study)
    except PickError as e:
        fail(str(e))
    trials = choose_trials(study, cfg, args.top, args.random, args.seed)
    if len(trials) < 2:
        fail(f"study {args.study!r} has {len(trials)} COMPLETE architecture(s) to audit, at least 2 are needed")
    log(f"auditing {len(trials)} architectures: {args.epochs} epochs, and {args.seeds} other seed(s) at "
        f"{cfg.trial.epochs} epochs")
    record = audit(study, cfg, trials, args.epochs, args.imgsz, str(Path(args.data).resolve()) if args.data else None,
                   args.seeds)
    record_audit(study, record, cfg.trial.imgsz)
    print(format_audit(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
