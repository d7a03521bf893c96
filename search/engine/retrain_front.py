"""Retrain the supernet front stand-alone: the last step of ``search.run --mode oneshot``.

After the one-shot search's report, ``--retrain-top k`` architectures of its front, plus the stock
model, are trained from scratch exactly as per-trial mode trains a trial: the run's own trial
settings (data, epochs, image size, batch, seed, head, recipe), each in its own process
(:func:`search.engine.runner.run_trial_process`), handed the params, GFLOPs and latency measured
during the search (the front's interleaved figures where there are some), so nothing is measured
twice. Each result is recorded as ``search.retrain`` records it (``retrained:<n>`` on the study,
:mod:`search.ship.retrain`) and its run lies in ``<study>/retrain/trial_NNNN_<hash>/``.

Which k: the front (stock left out, it is retrained anyway) ordered from the most accurate to the
fastest, and k points spread evenly along it (k=1: the most accurate; k=2: the most accurate and
the fastest). A front holding fewer than k: one line says so and those it holds are retrained.
A rerun skips trials already retrained at this schedule.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from search.pareto import baseline_trial, pareto_front
from search.pareto.front import latency_report
from search.ship.retrain import record_retrained, retrained_record
from search.study.config import RunConfig
from search.study.records import read_record, retrained_key
from trainers.cli import log
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture
from trainers.train.results import PreTraining, TrialJob, TrialResult, TrialSettings

__all__ = ["front_to_retrain", "retrain_front"]


def front_to_retrain(front: Sequence[FrozenTrial], baseline: FrozenTrial | None, top: int) -> list[FrozenTrial]:
    """``top`` trials of ``front`` (``baseline`` left out) spread evenly from the most accurate to the fastest."""
    others = sorted((t for t in front if baseline is None or t.number != baseline.number),
                    key=lambda t: -read_record(t, "metrics", {}).get("map50_95", -math.inf))
    if top >= len(others):
        return others
    if top == 1:
        return others[:1]
    return [others[int(i * (len(others) - 1) / (top - 1) + 0.5)] for i in range(top)]  # half up


def _settings(cfg: RunConfig, t: FrozenTrial) -> TrialSettings:
    """The trial's stand-alone training: the run's settings, in ``<study>/retrain/trial_NNNN_<hash>``."""
    return replace(cfg.trial, out=str(cfg.folder / "retrain" / f"trial_{t.number:04d}_{t.user_attrs['hash']}"))


def _pre_training(t: FrozenTrial, latency: Mapping[int, LatencyReport] | None) -> PreTraining | None:
    """What the search measured of ``t`` (its report's latency figure), ``None`` when a record is missing."""
    report = latency_report(t, latency)
    if report is None or "params" not in t.user_attrs or "gflops" not in t.user_attrs:
        return None
    return PreTraining(int(t.user_attrs["params"]), float(t.user_attrs["gflops"]), report)


def _done_before(study: optuna.Study, t: FrozenTrial, settings: TrialSettings) -> bool:
    """Whether ``t`` was retrained before at this schedule (a rerun of the search skips it)."""
    record = study.user_attrs.get(retrained_key(t.number)) or {}
    return (record.get("epochs"), record.get("imgsz"), record.get("data"), record.get("seed")) == (
        settings.epochs, settings.imgsz, settings.data, settings.seed)


def _retrain(study: optuna.Study, cfg: RunConfig, t: FrozenTrial, latency: Mapping[int, LatencyReport] | None,
             prefix: str) -> str | None:
    """Train ``t``'s architecture alone and record it; the reason when it failed, else ``None``."""
    from search.engine.runner import run_trial_process

    settings = _settings(cfg, t)
    if _done_before(study, t, settings):
        record = study.user_attrs[retrained_key(t.number)]
        log(f"{prefix}trial {t.number} was retrained before at this schedule: mAP50-95 {record['map50_95']:.4f}")
        return None
    arch = Architecture.from_dict(read_record(t, "architecture"))
    log(f"{prefix}retraining trial {t.number} ({arch.hash}) stand-alone: {settings.epochs} epochs at "
        f"{settings.imgsz} px, {arch.blocks_summary()}")
    result = run_trial_process(TrialJob(arch, settings, _pre_training(t, latency)), prefix=prefix,
                               timeout=cfg.trial_timeout)
    if not isinstance(result, TrialResult):
        log(f"{prefix}trial {t.number}: stand-alone training failed ({result.kind}): {result.reason}")
        return f"trial {t.number}: {result.reason}"
    record_retrained(study, t.number, retrained_record(result, settings, Path(settings.out)))
    log(f"{prefix}trial {t.number}: stand-alone mAP50-95 {result.map50_95:.4f} (supernet estimate "
        f"{read_record(t, 'metrics', {}).get('map50_95', math.nan):.4f}), trained in {result.train_seconds:.0f} s")
    return None


def retrain_front(study: optuna.Study, cfg: RunConfig, top: int,
                  latency: Mapping[int, LatencyReport] | None = None) -> list[str]:
    """Retrain stock and ``top`` front architectures stand-alone (module docstring); the failures, one line each.

    ``latency``: the figures the front was ranked on (the interleaved re-measure), handed to each training.
    """
    front = pareto_front(study, cfg.objectives, cfg.constraints, latency)
    baseline = baseline_trial(study)
    chosen = front_to_retrain(front, baseline, top)
    if len(chosen) < top:
        print(f"--retrain-top {top}: the supernet front holds {len(chosen)} architecture(s) besides stock; "
              f"retraining {'those' if chosen else 'stock only'}")
    trials = ([baseline] if baseline is not None else []) + chosen
    if baseline is None:
        log("the stock model has no COMPLETE trial: retraining the front without it")
    failures = []
    for i, t in enumerate(trials, 1):
        if (why := _retrain(study, cfg, t, latency, f"[retrain {i}/{len(trials)}] ")) is not None:
            failures.append(why)
    return failures


def retrain_and_report(cfg: RunConfig, top: int) -> int:
    """After the one-shot search: retrain stock and ``top`` front architectures, then the final report.

    The report files (``pareto.txt``/``json``/plots, uploaded as study artifacts) are written again with
    the stand-alone mAP beside the supernet estimates, and the retrained are printed ranked on their
    stand-alone mAP (:mod:`search.pareto.standalone`). Returns 1 when a retraining failed, else 0.
    """
    from search.engine.interleaved import remeasure_front
    from search.pareto import write_report
    from search.pareto.standalone import format_standalone
    from search.study.artifacts import STUDY_REPORT_FILES, artifact_store, upload_study_artifacts
    from search.study.storage import make_storage

    study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage))
    confirm = cfg.trial.latency_source != "predicted"  # as the search's report: its figures, recorded, not again
    latency = (remeasure_front(study, cfg, reuse=True) or None) if confirm else None
    failures = retrain_front(study, cfg, top, latency)
    summary = write_report(study, cfg, latency)
    upload_study_artifacts(artifact_store(cfg), study, [cfg.folder / name for name in STUDY_REPORT_FILES])
    from search.pareto.report import schedule_text

    print()
    if summary["retrained"]:
        print(format_standalone(summary["retrained"], schedule_text(cfg)))
    for line in failures:
        print(f"not retrained: {line}")
    print(f"Files: {cfg.folder}/pareto.txt (the front with 'alone' beside the estimates, then this ranking), "
          f"pareto.json (key 'retrained'); runs in {cfg.folder / 'retrain'}")
    if "audit" not in study.user_attrs:
        print(audit_hint(cfg))
    return 1 if failures else 0


def audit_hint(cfg: RunConfig) -> str:
    """The line that tells how to check, on the user's own data, that the supernet ranks as stand-alone training."""
    from search.study.config import password_note, url_without_password

    command = shlex.join(["python", "-m", "search.audit", "--storage", url_without_password(cfg.storage),
                          "--study", cfg.study, "--top", "3", "--random", "3", "--epochs", str(2 * cfg.trial.epochs),
                          "--seeds", "0"])
    return (f"Not yet checked that the supernet ranks these architectures as training them alone does (on the "
            f"embedded data it does not: README, One-shot search). To check, on this data: {command}"
            f"{password_note(cfg.storage)}")
