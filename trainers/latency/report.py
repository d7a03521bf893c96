"""The latency report: one figure and everything needed to read it (no torch import; the setting that asks for
it is :class:`trainers.latency.setting.LatencySetting`)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SAMPLES_KEPT = 200  # raw timings kept on a report: enough to recompute its interval or compare two reports


def device_slug(device: str) -> str:
    """A device name as a path-safe word: ``cpu (x86_64, 2 cores)`` -> ``cpu-x86_64-2-cores``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", device).strip("-")


def target_name(backend: str, device: str, dtype: str, imgsz: int, threads: int, head: str) -> str:
    """``<backend>/<device slug>/<dtype>/<imgsz>/t<threads>/<head>``: the one spelling of a latency target."""
    return f"{backend}/{device_slug(device)}/{dtype}/{imgsz}/t{threads}/{head}"


@dataclass(frozen=True)
class LatencyReport:
    """One latency figure (the median) and everything needed to read it.

    ``ci_low_ms``/``ci_high_ms``: a distribution-free 95% interval of the median (order
    statistics of ``samples``); ``None`` on reports written before intervals existed.
    ``measured_at``: when (UTC, ISO 8601). Defaults keep older reports (cache files, studies) readable.
    """

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
    backend: str = "torch"
    backend_version: str = ""
    head: str = "unpinned"
    post: str = ""
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    measured_at: str = ""
    samples: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        out = asdict(self)
        out["samples"] = list(self.samples)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyReport:
        """Inverse of :meth:`to_dict`; keys a report of an older version lacks take their defaults."""
        kw = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        kw["samples"] = tuple(kw.get("samples", ()))
        return cls(**kw)

    @property
    def interval(self) -> tuple[float, float]:
        """The median's interval (the median itself, twice, when the report has none)."""
        if self.ci_low_ms is None or self.ci_high_ms is None:
            return self.median_ms, self.median_ms
        return self.ci_low_ms, self.ci_high_ms

    def overlaps(self, other: LatencyReport) -> bool:
        """Whether the two medians' intervals overlap (their difference is within the noise)."""
        lo, hi = self.interval
        olo, ohi = other.interval
        return lo <= ohi and olo <= hi

    @property
    def target(self) -> str:
        """The target this figure was measured for (:func:`target_name`)."""
        return target_name(self.backend, self.device, self.dtype, self.imgsz, self.threads, self.head)

    def conditions(self) -> str:
        """What the figure was measured in: ``torch eager fused, cpu (x86_64, 2 cores), float32, batch 1, 640 px,
        1 thread, head nms_free``."""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        return (f"{self.backend} {self.mode}{' fused' if self.fused else ''}, {self.device}, {self.dtype}, "
                f"batch {self.batch}, {self.imgsz} px, {threads}, head {self.head}")

    def one_line(self) -> str:
        """A short line for people scanning a table: ``112.1 ms +/- 0.9 (cpu, float32, 640 px, 1 thread)``.

        ``+/-``: half the width of the 95% interval of the median (left out when the report has none);
        the device without its details; the backend when it is not torch.
        """
        spread = f" +/- {(self.ci_high_ms - self.ci_low_ms) / 2:.1f}" if (
            self.ci_low_ms is not None and self.ci_high_ms is not None) else ""
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        backend = f", {self.backend}" if self.backend != "torch" else ""
        predicted = "predicted " if self.mode == "predicted" else ""
        return (f"{predicted}{self.median_ms:.1f} ms{spread} ({self.device.split(' (')[0]}, {self.dtype}, "
                f"{self.imgsz} px, {threads}{backend})")

    def label(self) -> str:
        """A one-line label: ``1.42 ms median [1.40, 1.45] (p90 ..., cv ...) torch graph float16 b1 640px ...``."""
        lo, hi = self.interval
        return (f"{self.median_ms:.2f} ms median [{lo:.2f}, {hi:.2f}] (p90 {self.p90_ms:.2f}, cv {100 * self.cv:.1f}%, "
                f"n={self.n}) {self.backend} {self.mode} {self.dtype} b{self.batch} {self.imgsz}px head {self.head} "
                f"on {self.device} ({self.threads} threads), torch {self.torch}")
