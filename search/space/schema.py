"""Load and validate a search-space YAML file into plain frozen dataclasses.

No torch import here: ``python -m search.space check`` validates before heavy imports.
Every rule violation raises :class:`SpaceError` naming the field path (``stages.p4_out.se.reduction``).
"""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blocks.registry import DEPTHWISE_KERNELS, DOWNSAMPLES, SE_KINDS, SE_PLACEMENTS, STAGE_BLOCKS
from search.space.errors import SpaceError, did_you_mean
from trainers.architecture import SCALES
from trainers.devices import DEVICE_ALLOWED, is_device
from trainers.heads import DEFAULT_HEAD, HEADS
from trainers.latency.report import BACKEND_NAMES
from trainers.yolo26 import STAGE_LAYERS

METRICS: dict[str, str] = {
    "map50_95": "maximize",
    "map50": "maximize",
    "latency_ms": "minimize",
    "params_m": "minimize",
    "gflops": "minimize",
}
DIRECTIONS = ("maximize", "minimize")
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
TOP_KEYS = ("base", "scale", "head", "stages", "objectives", "constraints", "latency", "train")
STAGE_KEYS = ("block", "se", "kernels", "downsample", "tie")
SE_KEYS = ("placement", "kind", "reduction", "min_ratio", "max_ratio")
LATENCY_KEYS = ("imgsz", "device", "dtype", "backend", "threads")
TRAIN_KEYS = ("data", "epochs", "imgsz", "batch")
MAX_RATIO = 64


@dataclass(frozen=True)
class StageSpace:
    """The choices of one stage (tuples of allowed values), or a tie to another stage."""

    blocks: tuple[str, ...] = ("C3k2",)
    se_placements: tuple[str, ...] = ("none",)
    se_kinds: tuple[str, ...] = ("fixed",)
    reductions: tuple[int, ...] = (4,)
    ratio_bounds: tuple[tuple[int, int], ...] = ((4, 16),)
    kernels: tuple[tuple[int, ...], ...] = ((3,),)
    downsamples: tuple[str, ...] = ("Conv",)
    tie: str | None = None


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
class LatencySettings:
    """Where and how latency is measured: deployment image size, device, dtype, runtime backend, CPU threads."""

    imgsz: int = 640
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "torch"
    threads: int = 1


@dataclass(frozen=True)
class TrainSettings:
    """Training defaults of a trial; CLI flags override them. ``data=None``: the embedded dataset."""

    data: str | None = None
    epochs: int = 12
    imgsz: int = 128
    batch: int = 8


@dataclass(frozen=True)
class SpaceFile:
    """A validated search-space file."""

    source: str
    base: str
    scale: str
    head: str
    stages: tuple[tuple[str, StageSpace], ...]
    objectives: tuple[tuple[str, str], ...]
    constraints: tuple[Constraint, ...]
    latency: LatencySettings
    train: TrainSettings


class _Reader:
    """Validation helpers that know the file name, so every error names it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, message: str) -> SpaceError:
        return SpaceError(self.source, field, message)

    def mapping(self, value: Any, field: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a mapping, got {type(value).__name__} {_short(value)}")
        for key in value:
            if key not in allowed:
                shown = _short(key)[1:-1] if isinstance(key, str) else _short(key)  # bounded, control chars escaped
                raise self.fail(f"{field}.{shown}" if field else shown,
                                f"unknown key, allowed: {list(allowed)}{did_you_mean(key, allowed)}")
        return value

    def integer(self, value: Any, field: str, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(field, f"must be an integer in [{lo}, {hi}], got {_short(value)}")
        return value

    def choice(self, value: Any, field: str, allowed: tuple[Any, ...]) -> Any:
        # The type must match too: 3.0 == 3 and True == 1, but neither is a kernel size.
        if type(value) not in {type(a) for a in allowed} or value not in allowed:
            raise self.fail(field, f"must be one of {list(allowed)}, got {_short(value)}")
        return value

    def choices(self, value: Any, field: str, check: Any) -> tuple[Any, ...]:
        """A non-empty list (a scalar is a one-element list) of unique values, each passed through ``check``."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(field, "must list at least one choice, got []")
        out = tuple(check(v, f"{field}[{i}]") for i, v in enumerate(items))
        if len(set(out)) != len(out):
            raise self.fail(field, f"choices must be unique, got {_short(value)}")
        return out


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 3, 60, 60
    return r


_REPR = _bounded_repr()


def _short(value: Any) -> str:
    """A repr of at most 60 characters that never walks the whole value.

    A YAML alias bomb is a few hundred bytes as a file but gigabytes as a full ``repr``.
    """
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping.

    PyYAML keeps the last one silently, so a repeated stage would drop the first. Keys merged in
    with ``<<: *anchor`` may still be overridden: the check runs on the mapping as written.
    """

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key.value!r}",
                                                            key.start_mark)
                seen.add((key.tag, key.value))
        return node


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
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)
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
    r = _Reader(source)
    if data is None:
        raise r.fail("", "file is empty, expected a mapping with a 'stages' key")
    d = r.mapping(data, "", TOP_KEYS)
    if "stages" not in d:
        raise r.fail("stages", "missing required key")
    base = d.get("base", "yolo26.yaml")
    if base != "yolo26.yaml":
        raise r.fail("base", f"must be an Ultralytics YOLO26 detection config like 'yolo26.yaml', got {_short(base)}")
    scale = r.choice(d.get("scale", "n"), "scale", SCALES)
    head = r.choice(d.get("head", DEFAULT_HEAD), "head", HEADS)
    stages = _parse_stages(r, d["stages"])
    return SpaceFile(
        source=source, base=base, scale=scale, head=head, stages=stages,
        objectives=_parse_objectives(r, d.get("objectives")),
        constraints=_parse_constraints(r, d.get("constraints")),
        latency=_parse_latency(r, d.get("latency")),
        train=_parse_train(r, d.get("train")),
    )


def _parse_stages(r: _Reader, value: Any) -> tuple[tuple[str, StageSpace], ...]:
    stages = r.mapping(value, "stages", tuple(STAGE_LAYERS))
    if not stages:
        raise r.fail("stages", f"must name at least one stage of {list(STAGE_LAYERS)}, got {{}}")
    parsed = {name: _parse_stage(r, f"stages.{name}", spec) for name, spec in stages.items()}
    for name, st in parsed.items():
        if st.tie is None:
            continue
        if st.tie not in parsed or parsed[st.tie].tie is not None or st.tie == name:
            untied = [n for n, s in parsed.items() if s.tie is None and n != name]
            raise r.fail(f"stages.{name}.tie", f"must name an untied stage of this file {untied}, got {st.tie!r}")
    return tuple((n, parsed[n]) for n in STAGE_LAYERS if n in parsed)


def _parse_stage(r: _Reader, field: str, value: Any) -> StageSpace:
    d = r.mapping(value, field, STAGE_KEYS)
    if "tie" in d:
        if len(d) > 1:
            raise r.fail(field, f"a tied stage takes no other keys, got {sorted(d)}")
        tie = d["tie"]
        if not isinstance(tie, str):
            raise r.fail(f"{field}.tie", f"must be a stage name, got {_short(tie)}")
        return StageSpace(tie=tie)
    blocks = r.choices(d.get("block", "C3k2"), f"{field}.block", lambda v, f: r.choice(v, f, tuple(STAGE_BLOCKS)))
    se = _parse_se(r, f"{field}.se", d.get("se", {"placement": "none"}))
    kernels = r.choices(d.get("kernels", [[3]]), f"{field}.kernels", lambda v, f: _kernel_set(r, v, f))
    downsamples = r.choices(d.get("downsample", "Conv"), f"{field}.downsample",
                            lambda v, f: r.choice(v, f, DOWNSAMPLES))
    return StageSpace(blocks=blocks, kernels=kernels, downsamples=downsamples, **se)


def _kernel_set(r: _Reader, value: Any, field: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise r.fail(field, "a kernel set must list at least one kernel, got []")
    ks = tuple(r.choice(k, f"{field}[{i}]", DEPTHWISE_KERNELS) for i, k in enumerate(items))
    if len(set(ks)) != len(ks):
        raise r.fail(field, f"kernels in a set must be unique, got {_short(value)}")
    return tuple(sorted(ks))


def _parse_se(r: _Reader, field: str, value: Any) -> dict[str, Any]:
    d = r.mapping(value, field, SE_KEYS)
    placements = r.choices(d.get("placement", "none"), f"{field}.placement",
                           lambda v, f: r.choice(v, f, SE_PLACEMENTS))
    kinds = r.choices(d.get("kind", "fixed"), f"{field}.kind", lambda v, f: r.choice(v, f, SE_KINDS))
    reductions = r.choices(d.get("reduction", 4), f"{field}.reduction",
                           lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    mins = r.choices(d.get("min_ratio", 4), f"{field}.min_ratio", lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    maxs = r.choices(d.get("max_ratio", 16), f"{field}.max_ratio", lambda v, f: r.integer(v, f, 1, MAX_RATIO))
    bounds = tuple((a, b) for a in mins for b in maxs if a < b)
    if not bounds and "dynamic" in kinds:
        raise r.fail(f"{field}.min_ratio", f"must be < max_ratio for at least one pair, got min_ratio "
                     f"{list(mins)} and max_ratio {list(maxs)}")
    return {"se_placements": placements, "se_kinds": kinds, "reductions": reductions,
            "ratio_bounds": bounds or ((4, 16),)}


def _parse_objectives(r: _Reader, value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return (("map50_95", "maximize"), ("latency_ms", "minimize"))
    d = r.mapping(value, "objectives", tuple(METRICS))
    if not 1 <= len(d) <= 3:
        raise r.fail("objectives", f"must name 1 to 3 metrics of {list(METRICS)}, got {len(d)}")
    return tuple((m, r.choice(direction, f"objectives.{m}", DIRECTIONS)) for m, direction in d.items())


def _parse_constraints(r: _Reader, value: Any) -> tuple[Constraint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("constraints", f"must be a list like ['params_m <= 4'], got {_short(value)}")
    out = []
    for i, text in enumerate(value):
        m = CONSTRAINT_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise r.fail(f"constraints[{i}]", f"must read 'metric <= number' or 'metric >= number', got {_short(text)}")
        metric = r.choice(m.group(1), f"constraints[{i}]", tuple(METRICS))
        try:
            bound = float(m.group(3))
        except ValueError:
            bound = math.nan
        if not math.isfinite(bound):
            raise r.fail(f"constraints[{i}]", f"bound must be a finite number, got {m.group(3)!r}")
        out.append(Constraint(metric, m.group(2), bound))
    return tuple(out)


def _parse_latency(r: _Reader, value: Any) -> LatencySettings:
    d = r.mapping(value if value is not None else {}, "latency", LATENCY_KEYS)
    imgsz = r.integer(d.get("imgsz", 640), "latency.imgsz", 32, 4096)
    if imgsz % 32:
        raise r.fail("latency.imgsz", f"must be a multiple of 32 (the model's largest stride), got {imgsz}")
    device = d.get("device", "auto")
    if isinstance(device, int) and not isinstance(device, bool) and 0 <= device < 1024:
        device = str(device)  # a bare GPU index written as a number
    if not is_device(device):
        raise r.fail("latency.device", f"must be {DEVICE_ALLOWED}, got {_short(device)}")
    dtype = r.choice(d.get("dtype", "auto"), "latency.dtype", ("auto", "float16", "float32"))
    backend = r.choice(d.get("backend", "torch"), "latency.backend", BACKEND_NAMES)
    threads = r.integer(d.get("threads", 1), "latency.threads", 1, 256)
    return LatencySettings(imgsz=imgsz, device=device, dtype=dtype, backend=backend, threads=threads)


def _parse_train(r: _Reader, value: Any) -> TrainSettings:
    d = r.mapping(value if value is not None else {}, "train", TRAIN_KEYS)
    default = TrainSettings()
    data = d.get("data")
    if data is not None and (not isinstance(data, str) or not data.endswith((".yaml", ".yml"))):
        raise r.fail("train.data", f"must be a path to an Ultralytics data YAML or null, got {_short(data)}")
    imgsz = r.integer(d.get("imgsz", default.imgsz), "train.imgsz", 32, 4096)
    if imgsz % 32:
        raise r.fail("train.imgsz", f"must be a multiple of 32, got {imgsz}")
    return TrainSettings(
        data=data,
        epochs=r.integer(d.get("epochs", default.epochs), "train.epochs", 1, 10000),
        imgsz=imgsz,
        batch=r.integer(d.get("batch", default.batch), "train.batch", 1, 1024),
    )
