"""The package versions a figure was produced with (recorded on every trial and model card)."""

from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    """Versions of Python, torch, Ultralytics and Optuna (Optuna only when installed)."""
    import torch
    import ultralytics

    out = {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__}
    try:
        import optuna
    except ImportError:
        return out
    return {**out, "optuna": optuna.__version__}
