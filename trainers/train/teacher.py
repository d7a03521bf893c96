"""Teachers and warm starts: check a checkpoint before anything trains, and say what it is.

A teacher (Ultralytics' knowledge distillation, ``distill_model``/``dis``) and an
initialisation source (:mod:`trainers.train.inherit`) are Ultralytics detection checkpoints. Both
are checked once, up front: the file exists, it is a detection checkpoint, and its class count
and names are the dataset's. :class:`CheckpointInfo` is what a trial records about it: the
file's SHA-256 and its architecture (ours: hash and blocks; another YOLO: its yaml).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASELINE = "baseline"  # the value of --teacher/--init-from that means the study's own trial 0


@dataclass(frozen=True)
class CheckpointInfo:
    """What a teacher or initialisation checkpoint is: file, hash, architecture, classes."""

    path: str
    sha256: str
    architecture: str  # our architecture hash, or the YOLO yaml it was built from
    blocks: str  # our blocks summary, or the model's class name
    nc: int
    params: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)

    def line(self) -> str:
        """One line for a trial's attrs: ``<sha12> <architecture> (<blocks>)``."""
        return f"{self.sha256[:12]} {self.architecture} ({self.blocks})"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_detection_checkpoint(path: Path, flag: str) -> Any:
    """The model in an Ultralytics detection checkpoint; ``ValueError`` (one line naming ``flag``) otherwise."""
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    if not path.is_file():
        raise ValueError(f"{flag}: no such file {str(path)!r}")
    try:
        model, _ = load_checkpoint(str(path), device="cpu")
    except Exception as e:  # a pickle of something else, a truncated file, a model.pt export (weights only)
        raise ValueError(f"{flag}: {str(path)!r} is not an Ultralytics checkpoint ({type(e).__name__}); "
                         "give a best.pt/last.pt written by training") from None
    model = getattr(model, "student_model", model)
    if not isinstance(model, DetectionModel) or getattr(model, "task", "detect") != "detect":
        raise ValueError(f"{flag}: {str(path)!r} is not a detection model (got {type(model).__name__})")
    return model


def inspect_checkpoint(path: str | Path, flag: str, nc: int | None = None,
                       names: dict[int, str] | None = None) -> CheckpointInfo:
    """Check ``path`` is a detection checkpoint for ``nc`` classes named ``names``; what it is.

    ``ValueError`` with one line naming ``flag`` for a missing file, a file that is not a
    detection checkpoint, another class count or other class names.
    """
    path = Path(path).resolve()
    return describe_checkpoint(path, load_detection_checkpoint(path, flag), flag, nc, names)


def describe_checkpoint(path: Path, model: Any, flag: str, nc: int | None = None,
                        names: dict[int, str] | None = None) -> CheckpointInfo:
    """:func:`inspect_checkpoint` for a checkpoint already loaded (``model``, from ``path``)."""
    from trainers.model.build import architecture_of

    got_nc = int(model.yaml.get("nc", len(getattr(model, "names", {}) or {})))
    if nc is not None and got_nc != nc:
        raise ValueError(f"{flag}: {str(path)!r} detects {got_nc} classes, the data has {nc}")
    got_names = {int(k): str(v) for k, v in dict(getattr(model, "names", {}) or {}).items()}
    if names is not None and got_names and got_names != {int(k): str(v) for k, v in names.items()}:
        first = next(k for k in sorted(names) if got_names.get(k) != str(names[k]))
        raise ValueError(f"{flag}: {str(path)!r} names class {first} {got_names.get(first)!r}, "
                         f"the data names it {names[first]!r}")
    if "architecture" in (model.yaml or {}):
        arch = architecture_of(model)
        architecture, blocks = arch.hash, arch.blocks_summary()
    else:
        architecture, blocks = str(model.yaml.get("yaml_file", "?")), type(model).__name__
    return CheckpointInfo(str(path), file_sha256(path), architecture, blocks, got_nc,
                          sum(p.numel() for p in model.parameters()))
