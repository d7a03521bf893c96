"""Latency targets of a study: the same architectures measured for other runtimes, devices or machines.

A target is named after what it measures: ``<backend>/<device>/<dtype>/<imgsz>/t<threads>/<head>``
(e.g. ``onnxruntime/cpu-x86_64-2-cores/float32/640/t1/nms_free``). Its figures live on the study
as the user attr ``latency@<target>``: ``{"<trial number>": LatencyReport dict}`` (Optuna does not
allow changing a finished trial, so they sit on the study, keyed by trial). Weights do not
change latency, so no trial is retrained to score it for another target.
"""

from __future__ import annotations

from typing import Any

from trainers.latency.report import LatencyReport

TARGET_PREFIX = "latency@"


def target_of(report: LatencyReport) -> str:
    """The target a report was measured for."""
    return report.target


def targets(study: Any) -> list[str]:
    """The targets measured on ``study``, sorted."""
    return sorted(k[len(TARGET_PREFIX):] for k in study.user_attrs if k.startswith(TARGET_PREFIX))


def read_target(study: Any, target: str) -> dict[int, LatencyReport]:
    """The figures of ``target`` by trial number; ``ValueError`` listing the measured targets if it has none."""
    key = TARGET_PREFIX + target
    if key not in study.user_attrs:
        raise ValueError(f"--target must be one of the study's measured targets {targets(study)}, got {target!r}")
    return {int(n): LatencyReport.from_dict(r) for n, r in study.user_attrs[key].items()}


def write_target(study: Any, target: str, figures: dict[int, LatencyReport]) -> None:
    """Add (or replace) ``figures`` of ``target`` on the study, keeping its other trials' figures."""
    key = TARGET_PREFIX + target
    merged = dict(study.user_attrs.get(key, {}))
    merged.update({str(n): r.to_dict() for n, r in figures.items()})
    study.set_user_attr(key, merged)
