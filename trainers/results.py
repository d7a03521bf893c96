"""What a trial takes and gives back, as frozen, JSON-serialisable dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trainers.latency.report import LatencyReport

FAILURE_KINDS = ("build", "oom", "nan", "error", "timeout", "worker_died")


@dataclass(frozen=True)
class TrialSettings:
    """How a trial trains and measures.

    Attributes:
        data: Ultralytics data YAML (absolute path preferred).
        out: the trial's run directory (checkpoints, logs); never ``runs/``.
        epochs, imgsz, batch: training schedule and size.
        device: ``cpu``, ``0`` / ``cuda:0`` or ``auto``.
        latency_imgsz, latency_device, latency_dtype: the deployment measurement.
        latency_cache: JSON file of cached latency figures, or ``None``.
        seed: training seed.
        nan_at_batch: fault injection for tests (poison the weights before that batch).
    """

    data: str
    out: str
    epochs: int = 10
    imgsz: int = 160
    batch: int = 16
    device: str = "auto"
    latency_imgsz: int = 640
    latency_device: str = "auto"
    latency_dtype: str = "auto"
    latency_cache: str | None = None
    seed: int = 0
    nan_at_batch: int | None = None


@dataclass(frozen=True)
class TrialResult:
    """A finished trial: accuracy, cost, latency and where its weights are."""

    arch_hash: str
    architecture: dict[str, Any]
    map50_95: float
    map50: float
    params: int
    gflops: float
    latency: LatencyReport
    train_seconds: float
    weights: str
    device: str
    epochs: int
    epoch_map: tuple[float, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, latency nested under ``latency``."""
        out = asdict(self)
        out["epoch_map"] = list(self.epoch_map)
        out["ok"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """Inverse of :meth:`to_dict`."""
        kw = {k: data[k] for k in cls.__dataclass_fields__}
        kw["latency"] = LatencyReport.from_dict(data["latency"])
        kw["epoch_map"] = tuple(data.get("epoch_map", ()))
        return cls(**kw)


@dataclass(frozen=True)
class TrialFailure:
    """A trial that produced no score, and why. ``kind`` is one of :data:`FAILURE_KINDS`."""

    kind: str
    reason: str
    arch_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with ``ok: false``."""
        return {"ok": False, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialFailure:
        """Inverse of :meth:`to_dict`."""
        return cls(kind=data["kind"], reason=data["reason"], arch_hash=data.get("arch_hash", ""))

    @property
    def counts_as_finished(self) -> bool:
        """Every failure but a dead worker is final for that trial: it is not run again."""
        return self.kind != "worker_died"
