"""``python -m search.pareto``: print a study's Pareto front, on its own latency figures or on measured targets.

    python -m search.pareto --storage sqlite:///studies/yolo26.db --study yolo26
    python -m search.pareto --storage ... --study yolo26 --target onnxruntime/cpu-x86_64-2-cores/float32/640/t1/nms_free
    python -m search.pareto --storage ... --study yolo26 --list

Targets are measured by ``search.remeasure``. A target's front is taken over the trials it holds,
with its figures. With several ``--target``, one more table sets them side by side: a row per
architecture on any of their fronts, a latency column per target, ``*`` where it is on that
target's front. stdout: the tables. Bad input or an unknown target: one line on stderr, exit 2.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from search.pick import PickError, load_study, target_front
from trainers.cli import OneLineParser, fail, log

OWN = "the study's own latency figures"


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m search.pareto", description=__doc__)
    p.add_argument("--storage", required=True, help="Optuna storage URL of the search")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--target", action="append", default=[], help="a measured latency target (repeatable)")
    p.add_argument("--list", action="store_true", help="list the study's measured targets and exit")
    return p


def own_front(study: Any, config: Any) -> tuple[list[Any], None, Any]:
    """``(front, None, baseline)`` on the study's own figures."""
    from search.pareto import baseline_trial, pareto_front

    return pareto_front(study, config.objectives, config.constraints), None, baseline_trial(study)


def front_table(title: str, front: Sequence[Any], figures: Any, baseline: Any, map_noise: float | None = None,
                map_metric: str = "map50_95") -> str:
    """A titled front table (``format_table``) with its hypervolume; ``map_noise``: mAP's seed spread, if measured;
    ``map_metric``: the mAP the front is ranked on (``map50_95_int8`` for an INT8 objective)."""
    from search.pareto import format_table, front_hypervolume, front_rows

    lines = [f"Pareto front on {title}: {len(front)} points (feasible trials only; deltas vs the stock baseline)",
             format_table(front_rows(front, baseline, figures, map_noise, map_metric=map_metric))]
    if hv := front_hypervolume(front, baseline, figures, map_metric):
        lines.append(f"Hypervolume {hv['hypervolume']:.4f} (reference: latency "
                     f"{hv['reference']['latency_ms']:.2f} ms = 2x baseline)")
    return "\n".join(lines)


def side_by_side(names: Sequence[str], fronts: Sequence[Sequence[Any]], figures: Sequence[dict[int, Any]]) -> str:
    """One row per architecture on any front, one latency column per target (``*``: on that target's front)."""
    from search.pareto import blocks_label, trial_metrics

    rows: dict[str, Any] = {}
    for front in fronts:
        for t in front:
            rows.setdefault(t.user_attrs.get("hash", str(t.number)), t)
    on_front = [{t.number for t in front} for front in fronts]
    legend = [f"[{i}] {name}" for i, name in enumerate(names, 1)]
    columns = " ".join(f"{f'[{i}] ms':>10}" for i in range(1, len(names) + 1))
    head = f"{'trial':>5} {'hash':<12} {'mAP50-95':>8} {columns}"
    lines = ["Side by side (latency ms per target, * = on that target's front):", *legend, head + "  blocks",
             "-" * (len(head) + 8)]
    first = figures[0]
    for t in sorted(rows.values(), key=lambda t: first[t.number].median_ms if t.number in first else math.inf):
        cells = []
        for fig, members in zip(figures, on_front):
            cell = f"{fig[t.number].median_ms:.2f}{'*' if t.number in members else ' '}" if t.number in fig else "-"
            cells.append(f"{cell:>10}")
        map50_95 = trial_metrics(t).get("map50_95", math.nan)
        lines.append(f"{t.number:>5} {t.user_attrs.get('hash', '?'):<12} {map50_95:>8.4f} {' '.join(cells)}  "
                     f"{blocks_label(t)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    from search.pareto.front import accuracy_metric
    from search.pareto.report import map_seed_spread
    from search.study.targets import TARGET_PREFIX, targets

    try:
        study, config = load_study(args.storage, args.study)
    except PickError as e:
        fail(str(e))
    measured = targets(study)
    if args.list:
        for name in measured:
            print(f"{name}\t{len(study.user_attrs[TARGET_PREFIX + name])} trials")
        if not measured:
            log(f"study {args.study!r} has no measured targets: measure one with python -m search.remeasure")
        return 0
    unknown = [t for t in args.target if t not in measured]
    if unknown:
        fail(f"--target must be one of the study's measured targets {measured}, got {unknown[0]!r}")
    metric = accuracy_metric(config.objectives)
    if not args.target:
        print(front_table(OWN, *own_front(study, config), map_seed_spread(study), metric))
        return 0
    fronts, figures = [], []
    for name in args.target:
        front, figs, baseline = target_front(study, config, name)
        print(front_table(f"target {name} ({len(figs)} trials measured)", front, figs, baseline,
                          map_seed_spread(study), metric) + "\n")
        fronts.append(front)
        figures.append(figs)
    if len(args.target) > 1:
        print(side_by_side(args.target, fronts, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
