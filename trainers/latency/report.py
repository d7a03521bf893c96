"""The latency report: one figure and everything needed to read it (pure data, no torch import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LatencyReport:
    """One latency figure and everything needed to read it."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    n: int
    mode: str
    device: str
    dtype: str
    batch: int
    imgsz: int
    threads: int
    torch: str
    fused: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyReport:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def label(self) -> str:
        """A one-line label: ``1.42 ms median (p90 1.45, cv 0.4%) graph fp16 b1 640px on NVIDIA H100, torch 2.x``."""
        return (f"{self.median_ms:.2f} ms median (p90 {self.p90_ms:.2f}, cv {100 * self.cv:.1f}%, n={self.n}) "
                f"{self.mode} {self.dtype} b{self.batch} {self.imgsz}px on {self.device} "
                f"({self.threads} threads), torch {self.torch}")
