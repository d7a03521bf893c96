"""Choose a model to ship: a study trial by number, a Pareto point by rule, or an architecture file.

Rules: ``fastest`` (lowest latency on the front), ``most-accurate`` (highest mAP50-95 on the
front), ``knee`` (the front point closest to the ideal corner after scaling each objective to
[0, 1] over the front). ``--target T`` chooses on the front of a latency target measured by
``search.remeasure`` instead of the study's own figures. Shared by ``search.retrain`` and
``search.export``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from search.study.config import RunConfig
from search.study.records import read_record
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture, read_architecture

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
    target: str | None = None  # the latency target chosen on (``--target``), else the study's own figures
    target_latency: LatencyReport | None = None  # the chosen trial's figure on ``target``


def add_pick_args(p: argparse.ArgumentParser) -> None:
    """``--storage --study`` with one of ``--trial N`` / ``--pick RULE``, or ``--arch FILE``."""
    p.add_argument("--storage", help="Optuna storage URL of the search (e.g. sqlite:///studies/yolo26.db)")
    p.add_argument("--study", help="study name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial number in the study")
    which.add_argument("--pick", choices=PICK_RULES, help="choose a Pareto point by rule")
    which.add_argument("--arch", help="architecture JSON (a line of `search.space sample`)")
    p.add_argument("--target", help="latency target measured by search.remeasure: --pick chooses on its front "
                                    "(default: the study's own latency figures)")


def check_pick_args(args: argparse.Namespace) -> str | None:
    """The one-line problem with the pick arguments, or ``None``."""
    if args.arch is None and not (args.storage and args.study):
        return "--trial/--pick need --storage URL and --study NAME"
    if args.arch is not None and not Path(args.arch).is_file():
        return f"--arch: no such file {args.arch!r}"
    if args.trial is not None and args.trial < 0:
        return f"--trial must be a trial number >= 0, got {args.trial}"
    if getattr(args, "target", None) is not None and args.arch is not None:
        return "--target needs a study trial (--pick or --trial), not --arch"
    return None


def choose(front: list[Any], rule: str, latency: Mapping[int, LatencyReport] | None = None) -> Any:
    """The front point chosen by ``rule`` (mAP50-95 and latency ms; ``latency`` replaces the trials' own)."""
    from search.pareto import trial_metrics

    maps = [trial_metrics(t, latency)["map50_95"] for t in front]
    lats = [trial_metrics(t, latency)["latency_ms"] for t in front]
    if rule == "fastest":
        return front[lats.index(min(lats))]
    if rule == "most-accurate":
        return front[maps.index(max(maps))]
    span_m, span_l = (max(maps) - min(maps)) or 1.0, (max(lats) - min(lats)) or 1.0
    dist = [math.hypot((max(maps) - m) / span_m, (lat - min(lats)) / span_l) for m, lat in zip(maps, lats)]
    return front[dist.index(min(dist))]


class MeasuredTrials:
    """A study seen through one target: only the trials that target holds figures for.

    A target may hold a subset of the study (``remeasure --front-only``, trials finished since);
    the others' own figures are of another runtime or machine and must not enter its front.
    Duck-types the part of :class:`optuna.Study` that :func:`search.pareto.pareto_front` and
    :func:`search.pareto.baseline_trial` read.
    """

    def __init__(self, study: Any, numbers: set[int]):
        self.study, self.numbers = study, numbers

    @property
    def study_name(self) -> str:
        """The study's name."""
        return str(self.study.study_name)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        """The study's trials that the target holds."""
        return [t for t in self.study.get_trials(deepcopy=deepcopy, states=states) if t.number in self.numbers]


def target_front(study: Any, config: RunConfig, target: str) -> tuple[list[Any], dict[int, LatencyReport], Any]:
    """``(front, figures, baseline)`` of ``target``: over the trials it holds, with its latency figures.

    ``ValueError`` naming the measured targets when the study has no figures for ``target``.
    """
    import optuna

    from search.pareto import baseline_trial, pareto_front
    from search.study.targets import read_target

    figures = read_target(study, target)
    view = cast(optuna.Study, MeasuredTrials(study, set(figures)))
    return pareto_front(view, config.objectives, config.constraints, figures), figures, baseline_trial(view)


def load_study(storage: str, name: str) -> tuple[Any, RunConfig]:
    """The Optuna study ``name`` in ``storage`` and its recorded run configuration; :class:`PickError` if unusable."""
    import optuna

    from search.study.outage import describe_storage
    from search.study.storage import absolute_sqlite_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = absolute_sqlite_url(storage)
    if url.startswith("sqlite:///") and ":memory:" not in url and not Path(url[len("sqlite:///"):]).is_file():
        raise PickError(f"--storage {storage}: no such SQLite file {url[len('sqlite:///'):]!r}")
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except Exception as e:  # unknown study, unreachable or corrupt storage
        raise PickError(f"--study {name!r} in {describe_storage(storage)}: {type(e).__name__}: {e}"[:300]) from None
    try:
        config = RunConfig.from_study(study, url)
    except (KeyError, TypeError, ValueError) as e:
        raise PickError(f"study {name!r}: its recorded run configuration cannot be read ({e})") from None
    return study, config


RULE_TEXT = {"knee": "knee: closest to (best mAP, lowest latency) after scaling both to [0, 1] over the front",
             "fastest": "fastest: lowest latency on the front",
             "most-accurate": "most-accurate: highest mAP50-95 on the front"}


def pick(args: argparse.Namespace) -> Picked:
    """Resolve the pick arguments to an architecture (and its study trial when there is one)."""
    if args.arch is not None:
        return Picked(read_architecture(Path(args.arch)), None, None, f"architecture file {args.arch}")
    study, config = load_study(args.storage, args.study)
    target = getattr(args, "target", None)
    try:
        front, figures = _front(study, config, target) if args.pick else ([], _figures(study, target))
    except ValueError as e:  # a target the study has no figures for
        raise PickError(str(e)) from None
    if args.trial is not None:
        trial, rule = _asked_trial(study, args), f"trial {args.trial} as asked"
        if figures is not None and trial.number not in figures:
            raise PickError(f"--trial {args.trial}: target {target!r} holds no figure for it "
                            "(measure it with search.remeasure)")
    else:
        if not front:
            raise PickError(f"study {args.study!r} has no feasible COMPLETE trial to pick from"
                            + (f" on target {target!r}" if target else ""))
        trial = choose(front, args.pick, figures)
        on = f" of target {target}" if target else ""
        rule = f"trial {trial.number} by {RULE_TEXT[args.pick]} ({len(front)} front points{on})"
    return Picked(Architecture.from_dict(read_record(trial, "architecture")), trial, study, rule, config, target,
                  figures[trial.number] if figures is not None else None)


def _figures(study: Any, target: str | None) -> dict[int, LatencyReport] | None:
    """The figures of ``target`` (``None`` without one)."""
    from search.study.targets import read_target

    return read_target(study, target) if target is not None else None


def _front(study: Any, config: RunConfig, target: str | None) -> tuple[list[Any], dict[int, LatencyReport] | None]:
    """The front to pick on: ``target``'s, else the study's own; with the figures it was taken on."""
    from search.pareto import pareto_front

    if target is None:
        return pareto_front(study, config.objectives, config.constraints), None
    front, figures, _ = target_front(study, config, target)
    return front, figures


def _asked_trial(study: Any, args: argparse.Namespace) -> Any:
    """The COMPLETE trial ``--trial`` names; :class:`PickError` otherwise."""
    found = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial]
    if not found:
        raise PickError(f"--trial {args.trial}: no such trial in study {args.study!r} ({len(study.trials)} trials)")
    if found[0].state.name != "COMPLETE" or read_record(found[0], "architecture") is None:
        raise PickError(f"--trial {args.trial}: trial is {found[0].state.name}, only COMPLETE trials can be used")
    return found[0]
