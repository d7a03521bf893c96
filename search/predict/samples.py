"""The measurements behind a latency fit or validation, kept beside the model so a refit never re-measures.

Measuring is the expensive part of ``python -m search.latency_model`` (minutes per target); computing
the features of an architecture is not. So ``fit`` and ``validate`` write what they measured (each
architecture, its ratio to stock, the stock figure, the target's conditions, and for a validation the
second pass of the noise floor) as ``<model>.fit_samples.json`` / ``<model>.validation_samples.json``,
and ``--samples FILE`` reads such a file instead of measuring: the features are computed again with
the code of the day, so a new feature set or model form is tried on the same measurements. A file
measured on another target is refused with one line naming the condition that differs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from search.predict.fit import Measured
from trainers.latency.predictor import TargetConditions
from trainers.model.architecture import Architecture

__all__ = ["MeasuredSamples", "load_samples", "samples_path", "save_samples"]

SAMPLES_VERSION = 1


@dataclass(frozen=True)
class MeasuredSamples:
    """Architectures, their measured ratios to stock, the stock figure (ms), and ratios of a second pass over the
    first ``len(again)`` of them (the noise floor; empty for a fit)."""

    archs: tuple[Architecture, ...]
    ratios: tuple[float, ...]
    stock_ms: float
    again: tuple[float, ...] = ()


def samples_path(model_file: str | Path, kind: str) -> Path:
    """``<model>.fit_samples.json`` or ``<model>.validation_samples.json`` beside a cost model file."""
    path = Path(model_file)
    return path.with_name(f"{path.stem}.{kind}_samples.json")


def save_samples(path: str | Path, measured: Measured, conditions: TargetConditions,
                 again: Sequence[float] = ()) -> Path:
    """Write ``measured`` (and a second pass ``again``) with the target's conditions; atomic replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": SAMPLES_VERSION, "conditions": asdict(conditions), "stock_ms": measured.stock_ms,
            "archs": [a.to_dict() for a in measured.archs], "ratios": list(measured.ratios), "again": list(again)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


def load_samples(path: str | Path, conditions: TargetConditions) -> MeasuredSamples:
    """Read a samples file measured at ``conditions``; ``ValueError`` (one line) for a missing, unreadable,
    malformed or other-target file."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("version") != SAMPLES_VERSION:
            raise ValueError(f"format version {data.get('version')!r}, this tool reads {SAMPLES_VERSION}")
        theirs = TargetConditions(**data["conditions"])
        archs = tuple(Architecture.from_dict(a) for a in data["archs"])
        ratios = tuple(float(r) for r in data["ratios"])
        again = tuple(float(r) for r in data.get("again", ()))
        stock_ms = float(data["stock_ms"])
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"latency samples {str(path)!r} cannot be read: {e}") from e
    if len(archs) != len(ratios) or len(again) > len(archs):
        raise ValueError(f"latency samples {str(path)!r}: {len(archs)} architectures, {len(ratios)} ratios, "
                         f"{len(again)} measured again")
    if (diff := theirs.first_difference(conditions)) is not None:
        raise ValueError(f"latency samples {str(path)!r} were measured on another target ({diff})")
    return MeasuredSamples(archs, ratios, stock_ms, again)
