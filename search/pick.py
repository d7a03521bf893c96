"""Choose a model to ship: a study trial by number, a Pareto point by rule, or an architecture file.

Rules: ``fastest`` (lowest latency on the front), ``most-accurate`` (highest mAP50-95 on the
front), ``knee`` (the front point closest to the ideal corner after scaling each objective to
[0, 1] over the front). Shared by ``search.retrain`` and ``search.export``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import RunConfig
from trainers.architecture import Architecture, read_architecture

PICK_RULES = ("knee", "fastest", "most-accurate")


class PickError(ValueError):
    """The asked-for trial or study cannot be used (one-line CLI error, exit 2)."""


@dataclass
class Picked:
    """What was chosen and why."""

    arch: Architecture
    trial: Any | None  # optuna FrozenTrial, when chosen from a study
    study: Any | None
    rule: str
    config: RunConfig | None = None  # the study's run configuration, when chosen from a study


def add_pick_args(p: argparse.ArgumentParser) -> None:
    """``--storage --study`` with one of ``--trial N`` / ``--pick RULE``, or ``--arch FILE``."""
    p.add_argument("--storage", help="Optuna storage URL of the search (e.g. sqlite:///studies/yolo26.db)")
    p.add_argument("--study", help="study name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number in the study")
    which.add_argument("--pick", choices=PICK_RULES, help="choose a Pareto point by rule")
    which.add_argument("--arch", help="architecture JSON (a line of `search.space sample`)")


def check_pick_args(args: argparse.Namespace) -> str | None:
    """The one-line problem with the pick arguments, or ``None``."""
    if args.arch is None and not (args.storage and args.study):
        return "--trial/--pick need --storage URL and --study NAME"
    if args.arch is not None and not Path(args.arch).is_file():
        return f"--arch: no such file {args.arch!r}"
    if args.trial is not None and args.trial < 0:
        return f"--trial must be a trial number >= 0, got {args.trial}"
    return None


def choose(front: list[Any], rule: str) -> Any:
    """The front point chosen by ``rule`` (front values are (mAP50-95, latency ms))."""
    maps = [t.user_attrs["metrics"]["map50_95"] for t in front]
    lats = [t.user_attrs["metrics"]["latency_ms"] for t in front]
    if rule == "fastest":
        return front[lats.index(min(lats))]
    if rule == "most-accurate":
        return front[maps.index(max(maps))]
    span_m, span_l = (max(maps) - min(maps)) or 1.0, (max(lats) - min(lats)) or 1.0
    dist = [math.hypot((max(maps) - m) / span_m, (lat - min(lats)) / span_l) for m, lat in zip(maps, lats)]
    return front[dist.index(min(dist))]


def pick(args: argparse.Namespace) -> Picked:
    """Resolve the pick arguments to an architecture (and its study trial when there is one)."""
    if args.arch is not None:
        return Picked(read_architecture(Path(args.arch)), None, None, f"architecture file {args.arch}")
    import optuna

    from search.pareto import pareto_front
    from search.study import absolute_sqlite_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=args.study, storage=absolute_sqlite_url(args.storage))
    except Exception as e:  # unknown study, unreachable or corrupt storage
        raise PickError(f"--study {args.study!r} in {args.storage}: {type(e).__name__}: {e}"[:300]) from None
    try:
        config = RunConfig.from_study(study, absolute_sqlite_url(args.storage))
    except (KeyError, TypeError, ValueError) as e:
        raise PickError(f"study {args.study!r}: its recorded run configuration cannot be read ({e})") from None
    if args.trial is not None:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial]
        if not found:
            raise PickError(f"--trial {args.trial}: no such trial in study {args.study!r} ({len(study.trials)} trials)")
        if found[0].state.name != "COMPLETE" or "architecture" not in found[0].user_attrs:
            raise PickError(f"--trial {args.trial}: trial is {found[0].state.name}, only COMPLETE trials can be used")
        trial, rule = found[0], f"trial {args.trial} as asked"
    else:
        front = pareto_front(study, config.objectives, config.constraints)
        if not front:
            raise PickError(f"study {args.study!r} has no feasible COMPLETE trial to pick from")
        trial = choose(front, args.pick)
        rule = {"knee": "knee: closest to (best mAP, lowest latency) after scaling both to [0, 1] over the front",
                "fastest": "fastest: lowest latency on the front",
                "most-accurate": "most-accurate: highest mAP50-95 on the front"}[args.pick]
        rule = f"trial {trial.number} by {rule} ({len(front)} front points)"
    return Picked(Architecture.from_dict(trial.user_attrs["architecture"]), trial, study, rule, config)
