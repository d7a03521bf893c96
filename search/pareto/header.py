"""What a Pareto report is about: the header of ``pareto.txt`` and ``pareto.json``, and of the plot's axes.

Study, data and training schedule, head, the latency target the front is ranked on (with every
condition of its figures) and where those figures come from, objectives and constraints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from optuna.trial import FrozenTrial

from search.pareto.front import latency_report
from search.study.config import RunConfig
from search.study.records import read_record
from search.study.targets import target_of
from trainers.latency.report import LatencyReport


@dataclass(frozen=True)
class ReportHeader:
    """The header of a Pareto report.

    Attributes:
        study: the study's name.
        data: the data YAML the trials trained and were validated on.
        train: the trials' schedule (``12 epochs at 128 px``).
        head: the head validated, timed and exported (``nms_free`` or ``nms``).
        latency_target: the target the front's latency figures were measured for
            (``torch/cpu-x86_64-2-cores/float32/640/t1/nms_free``), ``None`` when no trial has a report.
        latency_conditions: those figures' conditions in words (backend, device, dtype, batch, size, threads, head).
        latency_source: whose figures rank the front (each trial's own, or an interleaved re-measure).
        objectives, constraints: as the study's run configuration has them.
        baseline_trial: the stock model's trial number, ``None`` when it did not finish.
        map_source: what the mAP figures are: each trial trained stand-alone, or (``--mode oneshot``) a supernet
            estimate, with the stand-alone mAP of the retrained beside it.
        int8: with an INT8 target, how its models were quantized (quantizer and version, runtime, calibration
            images) and what the INT8 mAP and the drop are; ``None`` for a float target.
    """

    study: str
    data: str
    train: str
    head: str
    latency_target: str | None
    latency_conditions: str | None
    latency_source: str
    objectives: tuple[str, ...]
    constraints: tuple[str, ...]
    baseline_trial: int | None
    map_source: str = "each trial trained stand-alone"
    int8: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data (the ``header`` of ``pareto.json``)."""
        return {**asdict(self), "objectives": list(self.objectives), "constraints": list(self.constraints)}

    def lines(self) -> list[str]:
        """The header as lines of text (the top of ``pareto.txt``)."""
        target = self.latency_target or "unknown (no trial has a latency report)"
        lines = [f"study:       {self.study}",
                 f"data:        {self.data or 'unknown'} (trained {self.train})",
                 f"head:        {self.head}",
                 f"mAP:         {self.map_source}",
                 *([f"INT8:        {self.int8}"] if self.int8 else []),
                 f"latency:     target {target}"]
        if self.latency_conditions:
            lines.append(f"             {self.latency_conditions}")
        lines += [f"             {self.latency_source}",
                  f"objectives:  {', '.join(self.objectives)}; constraints: {', '.join(self.constraints) or 'none'}",
                  f"baseline:    {f'trial {self.baseline_trial}' if self.baseline_trial is not None else 'none'}"
                  " (the stock model; deltas are against it)"]
        return lines


def reference_report(front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
                     latency: Mapping[int, LatencyReport] | None = None) -> LatencyReport | None:
    """The latency report that names the front's target: the baseline's, else the first front point's."""
    for t in ([baseline] if baseline is not None else []) + list(front):
        if (report := latency_report(t, latency)) is not None:
            return report
    return None


def report_header(study_name: str, cfg: RunConfig, front: Sequence[FrozenTrial], baseline: FrozenTrial | None,
                  latency: Mapping[int, LatencyReport] | None = None) -> ReportHeader:
    """The header of the report on ``front`` (``latency``: figures replacing those trials' own)."""
    report = reference_report(front, baseline, latency)
    if latency:
        source = (f"re-measured together (interleaved) at the end of the search for trials {sorted(latency)}; "
                  "the others keep their own figures")
    else:
        source = "each trial's own figure, measured when it ran"
    return ReportHeader(
        study=study_name, data=cfg.trial.data, train=f"{cfg.trial.epochs} epochs at {cfg.trial.imgsz} px",
        head=cfg.trial.head, latency_target=target_of(report) if report else None,
        latency_conditions=report.conditions() if report else None, latency_source=source,
        objectives=tuple(f"{m} {d}" for m, d in cfg.objectives), constraints=tuple(str(c) for c in cfg.constraints),
        baseline_trial=baseline.number if baseline is not None else None, map_source=map_source(cfg),
        int8=int8_source(cfg, [baseline] if baseline is not None else [], front))


def int8_source(cfg: RunConfig, *trials: Sequence[FrozenTrial]) -> str | None:
    """How the INT8 figures of ``cfg``'s study were made, in words (the header's ``INT8:`` line), from the first
    of ``trials`` with an ``int8`` record (else from the study's latency setting); ``None`` for a float target."""
    for t in (t for group in trials for t in group):
        rec = read_record(t, "int8")
        if isinstance(rec, dict) and "quantizer" in rec:
            return (f"post-training quantized by {rec['quantizer']} for {rec['backend']} on {rec['calib_images']} "
                    f"training images; INT8 mAP50-95 of that export at {rec['imgsz']} px, drop = float export minus "
                    "INT8 export (points)")
    lat = cfg.trial.latency
    if lat.dtype != "int8":
        return None
    return (f"post-training quantized for {lat.backend} on the first {lat.calib_images} training images "
            "(no trial records its INT8 accuracy)")


def map_source(cfg: RunConfig) -> str:
    """What the mAP figures of ``cfg``'s study are, in words (the header's ``mAP:`` line)."""
    t, one = cfg.trial, cfg.oneshot
    if cfg.mode != "oneshot" or one is None:
        return f"each trial trained stand-alone ({t.epochs} epochs at {t.imgsz} px)"
    calib = f"BatchNorm recalibrated on {one.calib_images} images" if one.calib_images else "BatchNorm not recalibrated"
    return (f"supernet estimate (recalibrated BN) for trials with source: supernet: the path's shared weights of a "
            f"SPOS supernet trained {one.supernet_epochs} epochs at {t.imgsz} px, {calib}; 'alone' is the "
            f"stand-alone mAP of those retrained ({t.epochs} epochs at {t.imgsz} px)")
