"""What a trial takes and gives back, as frozen, JSON-serialisable dataclasses.

The contract between a search and its trial process is one :class:`TrialJob` file
(``trial.json``, beside ``architecture.json`` in the trial's folder): the architecture, the
:class:`TrialSettings` and the :class:`PreTraining` figures the parent already measured. The
child reads it and answers with one :class:`TrialResult` or :class:`TrialFailure` JSON line
on stdout; while it trains, it writes one :class:`EpochProgress` line per epoch on stderr
(what the search's successive halving decides on).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from trainers.latency.report import LatencyReport
from trainers.latency.setting import LatencySetting
from trainers.model.architecture import Architecture

JOB_VERSION = 1

LATENCY_KEYS = ("imgsz", "device", "dtype", "backend", "threads", "calib_images")  # TrialSettings.latency on disk


class FailKind(str, Enum):
    """Why a trial produced no score: the one list, used by the trial process and by every search path."""

    BUILD = "build"  # the architecture cannot be built or run
    OOM = "oom"
    NAN = "nan"  # the loss went non-finite
    ERROR = "error"
    TIMEOUT = "timeout"  # --trial-timeout passed
    WORKER_DIED = "worker_died"  # its worker, process or node was lost: the trial is run again

    def __str__(self) -> str:
        return self.value


FAILURE_KINDS: tuple[str, ...] = tuple(k.value for k in FailKind)
EPOCH_MARK = "@repnas-epoch "  # starts a machine-readable progress line on a trial's stderr


@dataclass(frozen=True)
class TrialSettings:
    """How a trial trains and measures.

    Attributes:
        data: Ultralytics data YAML (absolute path preferred).
        out: the trial's run directory (checkpoints, logs); never ``runs/``.
        epochs, imgsz, batch: training schedule and size.
        device: ``cpu``, ``0`` / ``cuda:0`` or ``auto``.
        head: the head trained for, validated and measured (``nms_free`` or ``nms``, see :mod:`trainers.model.heads`).
        latency: the deployment measurement (its head is always ``head``); written to JSON as the flat
            ``latency_imgsz``, ``latency_device``, ``latency_dtype``, ``latency_backend``, ``latency_threads``
            keys that job files and recorded run configurations have always used.
        latency_cache: JSON file of cached latency figures, or ``None``.
        latency_source: ``measured``, or ``predicted`` / ``predicted+confirm``: the cost model ``latency_model``
            (:mod:`trainers.latency.predictor`) gives the figure; an operator it never saw is measured instead.
        seed: training seed.
        nc: class count of ``data`` (``None``: read from the data YAML).
        nan_at_batch: fault injection for tests (poison the weights before that batch).
        se_width_cost: lambda of the DynamicSE width cost added to the training loss (see
            :mod:`trainers.model.se_budget`); ``0`` trains on the stock loss.
        teacher: an Ultralytics detection checkpoint distilled into the trial (Ultralytics'
            ``distill_model``), or ``None``; ``distill_weight``: its loss weight (Ultralytics' ``dis``).
        init_from: a checkpoint whose matching tensors start the trial (:mod:`trainers.train.inherit`), or ``None``.
        train_threads: torch threads while training on the CPU: ``None``, Ultralytics' own
            ``cpu_count - 1`` (at most 8); a count; or ``"auto"`` (what ``search.run`` uses):
            Ultralytics' count plus its spare core, per epoch, while the other processes leave
            that core idle (see :mod:`trainers.train.threads`, which gives the measurements).
    """

    data: str
    out: str
    epochs: int = 10
    imgsz: int = 160
    batch: int = 16
    device: str = "auto"
    head: str = "nms_free"
    latency: LatencySetting = LatencySetting()
    latency_cache: str | None = None
    latency_source: str = "measured"
    latency_model: str | None = None
    seed: int = 0
    nc: int | None = None
    nan_at_batch: int | None = None
    se_width_cost: float = 0.0
    teacher: str | None = None
    distill_weight: float = 6.0
    init_from: str | None = None
    train_threads: int | str | None = None

    def __post_init__(self) -> None:
        if self.latency.head != self.head:  # one head: the one trained for is the one measured
            object.__setattr__(self, "latency", replace(self.latency, head=self.head))
        if self.latency.dtype == "int8" and self.latency.calib_data != self.data:  # INT8 calibrates on our train split
            object.__setattr__(self, "latency", replace(self.latency, calib_data=self.data))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the latency setting as its flat ``latency_*`` keys)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "latency"}
        out.update({f"latency_{k}": getattr(self.latency, k) for k in LATENCY_KEYS})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take their defaults."""
        flat = {f"latency_{k}" for k in LATENCY_KEYS}
        allowed = [f.name for f in fields(cls) if f.name != "latency"] + sorted(flat)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"settings: unknown key {unknown[0]!r}, allowed: {allowed}")
        kw = {k: v for k, v in data.items() if k not in flat}
        latency = {k: data[f"latency_{k}"] for k in LATENCY_KEYS if f"latency_{k}" in data}
        return cls(**kw, latency=LatencySetting(**latency))


@dataclass(frozen=True)
class PreTraining:
    """What is known of a trial before it trains: cost figures of the untrained model (weights do not change them)."""

    params: int
    gflops: float
    latency: LatencyReport
    latency_cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, latency nested."""
        return {"params": self.params, "gflops": self.gflops, "latency": self.latency.to_dict(),
                "latency_cached": self.latency_cached}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreTraining:
        """Inverse of :meth:`to_dict`."""
        return cls(int(data["params"]), float(data["gflops"]), LatencyReport.from_dict(data["latency"]),
                   bool(data.get("latency_cached", False)))

    @property
    def metrics(self) -> dict[str, float]:
        """The figures under the metric names a space's objectives and constraints use."""
        return {"params_m": self.params / 1e6, "gflops": self.gflops, "latency_ms": self.latency.median_ms}


@dataclass(frozen=True)
class TrialJob:
    """One trial to run: what to build, how to train and measure it, and what is already measured."""

    architecture: Architecture
    settings: TrialSettings
    pre_training: PreTraining | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with a format ``version``."""
        return {"version": JOB_VERSION, "architecture": {"hash": self.architecture.hash, **self.architecture.to_dict()},
                "settings": self.settings.to_dict(),
                "pre_training": self.pre_training.to_dict() if self.pre_training else None}

    def write(self, folder: Path) -> Path:
        """Write ``trial.json`` and ``architecture.json`` into ``folder``; return the job file."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "architecture.json").write_text(self.architecture.to_json() + "\n")
        path = folder / "trial.json"
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> TrialJob:
        """Read a job file written by :meth:`write`; ``ValueError`` naming the file and what is wrong."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != JOB_VERSION:
                raise ValueError(f"version must be {JOB_VERSION}, got {data.get('version')!r}")
            pre = data.get("pre_training")
            return cls(Architecture.from_dict(data["architecture"]), TrialSettings.from_dict(data["settings"]),
                       PreTraining.from_dict(pre) if pre else None)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"--job {path}: not a JSON trial job ({e.__class__.__name__})") from None
        except KeyError as e:
            raise ValueError(f"--job {path}: missing key {e}") from None
        except (TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"--job {path}: {e}") from None


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
    teacher: dict[str, Any] | None = None  # CheckpointInfo of the teacher distilled from
    init_from: dict[str, Any] | None = None  # CheckpointInfo of the initialisation source
    inherited: dict[str, Any] | None = None  # Inherited.to_dict(): tensors and share of parameters copied
    epoch_threads: tuple[int, ...] = field(default_factory=tuple)  # torch threads each epoch ended on (CPU only)
    int8: dict[str, Any] | None = None  # INT8 target: trainers.deploy.quantize.Int8Accuracy.to_dict()

    @property
    def int8_metrics(self) -> dict[str, float]:
        """``map50_95_int8`` and ``int8_drop`` (points) of an INT8 target; empty otherwise."""
        return {"map50_95_int8": self.int8["map50_95_int8"], "int8_drop": self.int8["int8_drop"]} if self.int8 else {}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, latency nested under ``latency``."""
        out = asdict(self)
        out["epoch_map"] = list(self.epoch_map)
        out["epoch_threads"] = list(self.epoch_threads)
        out["ok"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """Inverse of :meth:`to_dict`."""
        kw = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        kw["latency"] = LatencyReport.from_dict(data["latency"])
        kw["epoch_map"] = tuple(data.get("epoch_map", ()))
        kw["epoch_threads"] = tuple(data.get("epoch_threads", ()))
        return cls(**kw)


@dataclass(frozen=True)
class TrialFailure:
    """A trial that produced no score, and why (``kind``: a :class:`FailKind`; JSON keeps its value)."""

    kind: FailKind
    reason: str
    arch_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with ``ok: false``."""
        return {"ok": False, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialFailure:
        """Inverse of :meth:`to_dict`."""
        return cls(kind=FailKind(data["kind"]), reason=data["reason"], arch_hash=data.get("arch_hash", ""))

    @property
    def counts_as_finished(self) -> bool:
        """Every failure but a dead worker is final for that trial: it is not run again."""
        return self.kind != FailKind.WORKER_DIED


@dataclass(frozen=True)
class EpochProgress:
    """One validated epoch of a training trial, as the trial process streams it on stderr (one line)."""

    epoch: int
    epochs: int
    map50_95: float
    map50: float
    seconds: float
    threads: int = 0  # torch threads the epoch ended on; 0 off the CPU

    def to_line(self) -> str:
        """The line the trial process writes: :data:`EPOCH_MARK` and JSON, newline-terminated."""
        return EPOCH_MARK + json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_line(cls, line: str) -> EpochProgress | None:
        """The progress a line carries, or ``None`` for any other line (a malformed one included)."""
        if not line.startswith(EPOCH_MARK):
            return None
        try:
            data = json.loads(line[len(EPOCH_MARK):])
            return cls(int(data["epoch"]), int(data["epochs"]), float(data["map50_95"]), float(data["map50"]),
                       float(data["seconds"]), int(data.get("threads", 0)))
        except (ValueError, KeyError, TypeError):
            return None
