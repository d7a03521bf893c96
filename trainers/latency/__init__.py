"""Fused-model latency: CUDA-graph replay on GPUs, many timed repeats on CPUs (see :mod:`.measure`).

Names resolve lazily (PEP 562) so ``python -m trainers.latency`` checks its arguments before
torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LatencyCache", "LatencyReport", "measure_architecture_latency", "measure_latency", "resolve_device"]


def __getattr__(name: str) -> Any:
    """Import ``name`` from :mod:`trainers.latency.measure` on first use."""
    if name not in __all__:
        raise AttributeError(f"module 'trainers.latency' has no attribute {name!r}")
    module = "trainers.latency.report" if name == "LatencyReport" else "trainers.latency.measure"
    return getattr(importlib.import_module(module), name)
