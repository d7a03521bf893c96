"""One trial's work: build -> train -> evaluate -> measure latency; and loading exported models.

Heavy modules (torch, Ultralytics) are imported only when used, so
``from trainers.model.architecture import Architecture`` stays light. ``trainers.load_exported``
is resolved lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_exported"]


def __getattr__(name: str) -> Any:
    """Resolve ``load_exported`` on first use."""
    if name == "load_exported":
        from trainers.deploy.exported import load_exported

        return load_exported
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")
