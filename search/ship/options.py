"""What ``search.export`` was asked for, as one typed object (built once from the command line)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExportOptions"]


@dataclass(frozen=True)
class ExportOptions:
    """An export's options: where to write, which weights, the mAP-check data, the export size, and how the
    model was named (``storage``/``study`` or ``arch``: what the card's reproduce commands repeat).

    ``None``: the study's choice (weights: retrained, else the trial's best.pt; data: the trial's; imgsz: the
    study's deployment size).
    """

    out: Path
    weights: str | None = None
    data: str | None = None
    imgsz: int | None = None
    storage: str | None = None
    study: str | None = None
    arch: str | None = None
    int8_max_drop: float = 1.0  # INT8 target: the largest float-minus-INT8 mAP50-95 drop (points) the check passes

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportOptions:
        """The options of a parsed ``search.export`` command line (the output folder made absolute)."""
        return cls(out=Path(args.out).resolve(), weights=args.weights, data=args.data, imgsz=args.imgsz,
                   storage=getattr(args, "storage", None), study=getattr(args, "study", None),
                   arch=getattr(args, "arch", None), int8_max_drop=getattr(args, "int8_max_drop", 1.0))
