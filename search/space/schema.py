"""Load and validate a search-space YAML file into plain frozen dataclasses.

No torch import here: ``python -m search.space check`` validates before heavy imports.
Every rule violation raises :class:`SpaceError` naming the field path (``stages.p4_out.se.reduction``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blocks.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    DEFAULT_HEAD_STEM_LAYERS,
    HEAD_STEM_LAYERS,
    HEAD_STEMS,
)
from search.space.errors import SpaceError
from search.space.reader import Reader, UniqueKeyLoader, short
from search.space.stages import StageSpace, parse_stages
from trainers.latency.setting import BACKEND_NAMES, DEFAULT_CALIB_IMAGES, DTYPES, INT8_BACKENDS, LatencySetting
from trainers.model.architecture import SCALES
from trainers.model.heads import DEFAULT_HEAD, HEADS
from trainers.train.devices import DEVICE_ALLOWED, is_device

METRICS: dict[str, str] = {
    "map50_95": "maximize",
    "map50": "maximize",
    "latency_ms": "minimize",
    "params_m": "minimize",
    "gflops": "minimize",
    "map50_95_int8": "maximize",  # INT8 targets only (latency.dtype int8): trainers.deploy.quantize
    "int8_drop": "minimize",  # float minus INT8 mAP50-95, in points (0-100 scale)
}
INT8_METRICS = ("map50_95_int8", "int8_drop")
DIRECTIONS = ("maximize", "minimize")
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
TOP_KEYS = ("base", "scale", "backbone", "head", "head_stem", "head_stem_layers", "stages", "objectives",
            "constraints", "latency", "train", "oneshot", "presets")
LATENCY_KEYS = ("imgsz", "device", "dtype", "backend", "threads", "calib_images")
TRAIN_KEYS = ("data", "epochs", "imgsz", "batch", "rungs", "eta", "rung_min_signal", "se_width_cost",
              "distill_weight")
ONESHOT_KEYS = ("supernet_epochs", "subnets", "calib_images", "retrain_top")


@dataclass(frozen=True)
class Constraint:
    """``metric <= value`` (or ``>=``); feasible when it holds."""

    metric: str
    op: str
    value: float

    def violation(self, measured: float) -> float:
        """Optuna constraint value: <= 0 when satisfied, the overshoot otherwise."""
        return measured - self.value if self.op == "<=" else self.value - measured

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class TrainSettings:
    """Training defaults of a trial; CLI flags override them. ``data=None``: the embedded dataset.

    ``rungs``, ``eta``: successive halving (:mod:`search.engine.rungs`); ``rungs=()`` turns it off. Rungs follow
    the schedule: fractions in (0, 1) of the trial's epochs, or integers, epochs of this ``epochs``
    schedule, scaled when ``--epochs`` changes it (:func:`search.engine.rungs.schedule_rungs`).
    ``rung_min_signal``: the mAP spread at a rung below which nobody is stopped there.
    ``se_width_cost``: lambda of the DynamicSE width cost in the loss (:mod:`trainers.model.se_budget`); 0: none.
    ``distill_weight``: the distillation loss weight (Ultralytics' ``dis``) when a teacher is given.
    """

    data: str | None = None
    epochs: int = 12
    imgsz: int = 128
    batch: int = 8
    rungs: tuple[int, ...] | tuple[float, ...] = ()
    eta: int = 3
    rung_min_signal: float = 0.01
    se_width_cost: float = 0.0
    distill_weight: float = 6.0


@dataclass(frozen=True)
class OneShotSettings:
    """Defaults of ``search.run --mode oneshot``; ``--supernet-epochs``/``--subnets``/``--calib-images``/
    ``--retrain-top`` override them.

    ``supernet_epochs``: SPOS training epochs of the supernet; ``subnets``: architectures scored on it
    (the trials); ``calib_images``: train images BatchNorm is recalibrated on before scoring a subnet
    (0: no recalibration); ``retrain_top``: front architectures retrained stand-alone afterwards;
    ``supernet_device``: where the supernet trains (``--supernet-device`` only, not in the space file: it is the
    machine's), e.g. ``0,1`` for DDP on two GPUs; ``None``: the run's ``--device``.
    """

    supernet_epochs: int = 24
    subnets: int = 140
    calib_images: int = 64
    retrain_top: int = 2
    supernet_device: str | None = None


@dataclass(frozen=True)
class SpaceFile:
    """A validated search-space file.

    ``head_stems``: the Detect head stems a trial may pick (:data:`blocks.registry.HEAD_STEMS`);
    ``head_stem_layers``: the RepConv layer counts of a non-stock stem.
    """

    source: str
    base: str
    scale: str
    head: str
    stages: tuple[tuple[str, StageSpace], ...]
    objectives: tuple[tuple[str, str], ...]
    constraints: tuple[Constraint, ...]
    latency: LatencySetting
    train: TrainSettings
    oneshot: OneShotSettings = OneShotSettings()
    backbones: tuple[str, ...] = (DEFAULT_BACKBONE,)
    head_stems: tuple[str, ...] = ("stock",)
    head_stem_layers: tuple[int, ...] = (DEFAULT_HEAD_STEM_LAYERS,)
    presets: tuple[str, ...] = ()


def load_space(path: str | Path) -> SpaceFile:
    """Read and validate a search-space YAML file; raise :class:`SpaceError` on any problem."""
    source = str(path)
    if not source:
        raise SpaceError("''", "", "empty path, expected a search-space YAML file")
    p = Path(path)
    if not p.is_file():
        raise SpaceError(source, "", "file not found" if not p.exists() else "not a regular file")
    try:
        raw = p.read_bytes()
    except OSError as e:  # no permission, an I/O error
        raise SpaceError(source, "", f"cannot read: {e.strerror or e}") from None
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise SpaceError(source, "", f"not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpaceError(source, "", f"broken YAML{where}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise SpaceError(source, "", "broken YAML: nested too deeply") from None
    return parse_space(data, source)


def parse_space(data: Any, source: str = "<space>") -> SpaceFile:
    """Validate already-parsed YAML data into a :class:`SpaceFile`."""
    r = Reader(source)
    if data is None:
        raise r.fail("", "file is empty, expected a mapping with a 'stages' key")
    d = r.mapping(data, "", TOP_KEYS)
    if "stages" not in d:
        raise r.fail("stages", "missing required key")
    base = d.get("base", "yolo26.yaml")
    if base != "yolo26.yaml":
        raise r.fail("base", f"must be an Ultralytics YOLO26 detection config like 'yolo26.yaml', got {short(base)}")
    scale = r.choice(d.get("scale", "n"), "scale", SCALES)
    head = r.choice(d.get("head", DEFAULT_HEAD), "head", HEADS)
    backbones = r.choices(d.get("backbone", DEFAULT_BACKBONE), "backbone", lambda v, f: r.choice(v, f, BACKBONES))
    stages = parse_stages(r, d["stages"], backbones)
    head_stems = r.choices(d.get("head_stem", "stock"), "head_stem", lambda v, f: r.choice(v, f, HEAD_STEMS))
    head_stem_layers = r.choices(d.get("head_stem_layers", DEFAULT_HEAD_STEM_LAYERS), "head_stem_layers",
                                 lambda v, f: r.choice(v, f, HEAD_STEM_LAYERS))
    space = SpaceFile(
        source=source, base=base, scale=scale, head=head, stages=stages, backbones=backbones,
        head_stems=head_stems, head_stem_layers=head_stem_layers,
        objectives=_parse_objectives(r, d.get("objectives")),
        constraints=_parse_constraints(r, d.get("constraints")),
        latency=_parse_latency(r, d.get("latency"), head),
        train=_parse_train(r, d.get("train")),
        oneshot=_parse_oneshot(r, d.get("oneshot")),
        presets=_parse_presets(r, d.get("presets", False)),
    )
    _check_int8_metrics(r, space)
    return space


def _check_int8_metrics(r: Reader, space: SpaceFile) -> None:
    """``map50_95_int8`` / ``int8_drop`` exist only for an INT8 latency target."""
    named = [(f"objectives.{m}", m) for m, _ in space.objectives]
    named += [(f"constraints[{i}]", c.metric) for i, c in enumerate(space.constraints)]
    for where, metric in named:
        if metric in INT8_METRICS and space.latency.dtype != "int8":
            raise r.fail(where, f"{metric} needs an INT8 target (latency.dtype: int8), got latency.dtype "
                                f"{space.latency.dtype!r}")


def _parse_objectives(r: Reader, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return (("map50_95", "maximize"), ("latency_ms", "minimize"))
    d = r.mapping(value, "objectives", tuple(METRICS))
    if not 1 <= len(d) <= 3:
        raise r.fail("objectives", f"must name 1 to 3 metrics of {list(METRICS)}, got {len(d)}")
    return tuple((m, r.choice(direction, f"objectives.{m}", DIRECTIONS)) for m, direction in d.items())


def _parse_constraints(r: Reader, value: Any) -> tuple[Constraint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("constraints", f"must be a list like ['params_m <= 4'], got {short(value)}")
    out = []
    for i, text in enumerate(value):
        m = CONSTRAINT_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise r.fail(f"constraints[{i}]", f"must read 'metric <= number' or 'metric >= number', got {short(text)}")
        metric = r.choice(m.group(1), f"constraints[{i}]", tuple(METRICS))
        try:
            bound = float(m.group(3))
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound):
            raise r.fail(f"constraints[{i}]", f"bound must be a finite number, got {m.group(3)!r}")
        out.append(Constraint(metric, m.group(2), bound))
    return tuple(out)


def _parse_latency(r: Reader, value: Any, head: str) -> LatencySetting:
    d = r.mapping(value if value is not None else {}, "latency", LATENCY_KEYS)
    imgsz = r.integer(d.get("imgsz", 640), "latency.imgsz", 32, 4096)
    if imgsz % 32:
        raise r.fail("latency.imgsz", f"must be a multiple of 32 (the model's largest stride), got {imgsz}")
    device = d.get("device", "auto")
    if isinstance(device, int) and not isinstance(device, bool) and 0 <= device < 1024:
        device = str(device)  # a bare GPU index written as a number
    if not is_device(device):
        raise r.fail("latency.device", f"must be {DEVICE_ALLOWED}, got {short(device)}")
    dtype = r.choice(d.get("dtype", "auto"), "latency.dtype", DTYPES)
    backend = r.choice(d.get("backend", "torch"), "latency.backend", BACKEND_NAMES)
    if dtype == "int8" and backend not in INT8_BACKENDS:
        raise r.fail("latency.dtype", f"int8 needs latency.backend {' or '.join(INT8_BACKENDS)} (eager PyTorch has "
                                      f"no INT8 path), got backend {backend!r}")
    threads = r.integer(d.get("threads", 1), "latency.threads", 1, 256)
    calib = r.integer(d.get("calib_images", DEFAULT_CALIB_IMAGES), "latency.calib_images", 1, 100000)
    return LatencySetting(imgsz=imgsz, device=device, dtype=dtype, threads=threads, backend=backend, head=head,
                          calib_images=calib)


def _parse_train(r: Reader, value: Any) -> TrainSettings:
    d = r.mapping(value if value is not None else {}, "train", TRAIN_KEYS)
    default = TrainSettings()
    data = d.get("data")
    if data is not None and (not isinstance(data, str) or not data.endswith((".yaml", ".yml"))):
        raise r.fail("train.data", f"must be a path to an Ultralytics data YAML or null, got {short(data)}")
    imgsz = r.integer(d.get("imgsz", default.imgsz), "train.imgsz", 32, 4096)
    if imgsz % 32:
        raise r.fail("train.imgsz", f"must be a multiple of 32, got {imgsz}")
    return TrainSettings(
        data=data,
        epochs=r.integer(d.get("epochs", default.epochs), "train.epochs", 1, 10000),
        imgsz=imgsz,
        batch=r.integer(d.get("batch", default.batch), "train.batch", 1, 1024),
        rungs=_rungs(r, d.get("rungs")),
        eta=r.integer(d.get("eta", default.eta), "train.eta", 2, 100),
        rung_min_signal=_non_negative(r, d.get("rung_min_signal", default.rung_min_signal), "train.rung_min_signal"),
        se_width_cost=_non_negative(r, d.get("se_width_cost", default.se_width_cost), "train.se_width_cost"),
        distill_weight=_non_negative(r, d.get("distill_weight", default.distill_weight), "train.distill_weight"),
    )


def _parse_presets(r: Reader, value: Any) -> tuple[str, ...]:
    """``presets: true`` (every file of spaces/presets), ``false`` (default) or a list of preset names."""
    from search.space.presets import preset_names

    known = preset_names()
    if value is True:
        return known
    if value is False or value is None:
        return ()
    return r.choices(value, "presets", lambda v, f: r.choice(v, f, known))


def _parse_oneshot(r: Reader, value: Any) -> OneShotSettings:
    d = r.mapping(value if value is not None else {}, "oneshot", ONESHOT_KEYS)
    default = OneShotSettings()
    return OneShotSettings(
        supernet_epochs=r.integer(d.get("supernet_epochs", default.supernet_epochs), "oneshot.supernet_epochs",
                                  1, 10000),
        subnets=r.integer(d.get("subnets", default.subnets), "oneshot.subnets", 1, 100000),
        calib_images=r.integer(d.get("calib_images", default.calib_images), "oneshot.calib_images", 0, 100000),
        retrain_top=r.integer(d.get("retrain_top", default.retrain_top), "oneshot.retrain_top", 0, 1000),
    )


def _non_negative(r: Reader, value: Any, where: str) -> float:
    """A finite number >= 0 (``train.se_width_cost``, ``train.distill_weight``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise r.fail(where, f"must be a finite number >= 0, got {short(value)}")
    return float(value)


def _rungs(r: Reader, value: Any) -> tuple[int, ...] | tuple[float, ...]:
    """Increasing epochs, or increasing fractions of the epochs in (0, 1) (``null`` or ``[]``: none).

    Not mixed; how they meet the trial's epochs is :func:`search.engine.rungs.schedule_rungs`' business.
    """
    items = value if isinstance(value, list) else [] if value is None else [value]
    if any(isinstance(v, float) for v in items):
        for i, v in enumerate(items):
            if not isinstance(v, float) or not 0 < v < 1:
                raise r.fail(f"train.rungs[{i}]", f"must be a fraction of the epochs in (0, 1) like the other "
                                                  f"rungs (or all integers: epochs), got {short(v)}")
        rungs: tuple[int, ...] | tuple[float, ...] = tuple(items)
    else:
        rungs = tuple(r.integer(v, f"train.rungs[{i}]", 1, 10000) for i, v in enumerate(items))
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise r.fail("train.rungs", f"must be increasing, got {short(value)}")
    return rungs
