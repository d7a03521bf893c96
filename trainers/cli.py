"""Shared command-line plumbing: one-line errors with exit code 2, quiet Ultralytics, JSON stdout.

Nothing here imports torch or Ultralytics at import time, so arguments are checked before
the heavy imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad command-line input; the CLI prints it as one line and exits with code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        fail(f"{self.prog}: {message}")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit."""
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def emit_json(data: Any) -> None:
    """Write one JSON line to stdout (the CLIs' only stdout output)."""
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """Progress for humans, on stderr."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def quiet_ultralytics(level: int = logging.WARNING) -> None:
    """Run Ultralytics offline and send its logger to stderr (it writes to stdout by default).

    Call before the first Ultralytics import; safe to call again.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    from ultralytics.utils import LOGGER

    for handler in LOGGER.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.setStream(sys.stderr)
    LOGGER.setLevel(level)


def positive_int(name: str, lo: int = 1, hi: int = 1_000_000) -> Any:
    """argparse ``type=`` for an integer in ``[lo, hi]`` with a message naming ``name``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def positive_float(name: str) -> Any:
    """argparse ``type=`` for a finite float ``> 0`` with a message naming ``name``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be a positive number, got {text!r}")
        return value

    return parse


def non_negative_float(name: str) -> Any:
    """argparse ``type=`` for a finite float ``>= 0`` with a message naming ``name``."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number >= 0, got {text!r}")
        return value

    return parse


def existing_file(name: str) -> Any:
    """argparse ``type=`` for a path to an existing regular file."""

    def parse(text: str) -> Path:
        p = Path(text)
        if not p.is_file():
            raise argparse.ArgumentTypeError(f"no such file {text!r}")
        return p

    return parse


def train_device_arg(flag: str) -> Callable[[str], str]:
    """argparse ``type=`` for a training device: :func:`device_arg`'s or several GPU indices (``0,1``: DDP)."""
    from trainers.train.devices import TRAIN_DEVICE_ALLOWED, is_train_device

    def parse(text: str) -> str:
        if not is_train_device(text):
            raise argparse.ArgumentTypeError(f"{flag} must be {TRAIN_DEVICE_ALLOWED}, got {text!r}")
        return text

    return parse


def device_arg(text: str) -> str:
    """argparse ``type=`` for ``cpu``, ``cuda``, ``cuda:N``, ``N`` or ``auto``."""
    from trainers.train.devices import DEVICE_ALLOWED, is_device

    if not is_device(text):
        raise argparse.ArgumentTypeError(f"--device must be {DEVICE_ALLOWED}, got {text!r}")
    return text
