"""Trials retrained stand-alone, ranked on their stand-alone mAP: the final word of a one-shot search.

A one-shot search values each architecture on the supernet's shared weights (trial user attr
``source: supernet``): an estimate that ranks, not the accuracy of a model. The front's
architectures and stock are then retrained alone (``retrained:<n>`` on the study,
:mod:`search.ship.retrain`); this table sets each one's stand-alone mAP50-95 beside its estimate,
ranks on the stand-alone figure, and marks the stand-alone front (not dominated on stand-alone
mAP and latency among the retrained). Only retrains at the search's schedule (epochs, image size)
are ranked together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from search.pareto.dominance import non_dominated_fronts
from search.pareto.front import LATENCY_METRIC, blocks_label, trial_metrics
from search.study.records import retrained_key
from trainers.latency.report import LatencyReport

SUPERNET = "supernet"  # the trial user attr ``source`` of an architecture valued on the supernet


def is_estimate(t: Any) -> bool:
    """Whether the trial's mAP is a supernet estimate (user attr ``source: supernet``), not a trained model's."""
    return t.user_attrs.get("source") == SUPERNET


def standalone_map(study: optuna.Study, epochs: int, imgsz: int) -> dict[int, float]:
    """Stand-alone mAP50-95 by trial number: the ``retrained:<n>`` records at ``epochs`` and ``imgsz``."""
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = study.user_attrs.get(retrained_key(t.number))
        if record and record.get("epochs") == epochs and record.get("imgsz") == imgsz:
            out[t.number] = float(record["map50_95"])
    return out


def standalone_rows(study: optuna.Study, alone: Mapping[int, float], baseline: int | None,
                    latency: Mapping[int, LatencyReport] | None = None) -> list[dict[str, Any]]:
    """One row per retrained trial in ``alone``, best stand-alone mAP first.

    ``estimate``: the trial's search-time mAP50-95 (a supernet estimate when ``source`` is ``supernet``);
    ``d_alone_points``: stand-alone mAP minus stock's stand-alone mAP, in points (``nan`` when stock
    was not retrained); ``on_front``: not dominated on (stand-alone mAP, latency) among the rows.
    """
    trials = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in alone}
    rows = []
    for n, t in trials.items():
        m = trial_metrics(t, latency)
        rows.append({"trial": n, "hash": t.user_attrs.get("hash"), "map50_95_alone": alone[n],
                     "estimate": m.get("map50_95", math.nan), "source": t.user_attrs.get("source", "trained"),
                     "latency_ms": m.get(LATENCY_METRIC, math.nan), "baseline": n == baseline,
                     "d_alone_points": 100 * (alone[n] - alone[baseline]) if baseline is not None and baseline in alone
                     else math.nan,
                     "blocks": blocks_label(t)})
    fronts = non_dominated_fronts([(-r["map50_95_alone"], r["latency_ms"]) for r in rows]) if rows else [[]]
    for i, r in enumerate(rows):
        r["on_front"] = i in fronts[0]
    return sorted(rows, key=lambda r: -r["map50_95_alone"])


def format_standalone(rows: Sequence[dict[str, Any]], schedule: str) -> str:
    """The stand-alone ranking as text: a title naming the schedule, the table, what the estimate column is."""
    head = (f"{'rank':>4} {'trial':>5} {'hash':<12} {'alone':>7} {'estimate':>8} {'dalone pt':>9} {'lat ms':>8} "
            f"{'front':>5}  blocks")
    lines = [f"Retrained stand-alone ({schedule}), ranked on stand-alone mAP50-95:", head, "-" * len(head)]
    for rank, r in enumerate(rows, 1):
        name = f"{r['trial']}{'*' if r['baseline'] else ''}"
        est = f"{r['estimate']:.4f}{'e' if r['source'] == SUPERNET else ' '}"
        lines.append(f"{rank:>4} {name:>5} {r['hash'] or '?':<12} {r['map50_95_alone']:>7.4f} {est:>9} "
                     f"{r['d_alone_points']:>+9.2f} {r['latency_ms']:>8.2f} {'yes' if r['on_front'] else '':>5}  "
                     f"{r['blocks']}")
    lines += ["alone: mAP50-95 of the architecture trained stand-alone (study user attr retrained:<trial>); "
              "* stock; dalone pt: against stock's stand-alone mAP; front: not dominated on (alone, latency) here",
              "estimate: the search-time mAP50-95; 'e' = supernet estimate (shared weights, BatchNorm recalibrated; "
              "user attr source: supernet), a ranking signal, not a model's accuracy"]
    return "\n".join(lines)
