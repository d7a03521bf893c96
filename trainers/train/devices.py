"""Device names as users write them (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``N``) and what they resolve to.

The pattern is checked before torch is imported (CLI flags, space files); torch is imported
only by the functions that resolve a device.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:[0-9]+|[0-9]+")
DEVICE_ALLOWED = "'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index"
GPUS_PATTERN = re.compile(r"[0-9]+(,[0-9]+)+")
TRAIN_DEVICE_ALLOWED = f"{DEVICE_ALLOWED[:-len(' or a GPU index')]}, a GPU index or GPU indices such as '0,1'"


def is_device(text: Any) -> bool:
    """Whether ``text`` is a device string this project accepts (see :data:`DEVICE_PATTERN`)."""
    return isinstance(text, str) and DEVICE_PATTERN.fullmatch(text) is not None


def is_train_device(text: Any) -> bool:
    """Whether ``text`` is a device a training may run on: a device (:func:`is_device`) or several GPUs (``0,1``),
    which Ultralytics trains on with DDP, one process per GPU."""
    return is_device(text) or (isinstance(text, str) and GPUS_PATTERN.fullmatch(text) is not None)


def check_gpus(device: str, batch: int) -> None:
    """``ValueError`` in one line when the training device ``device`` names a GPU twice, splits ``batch`` unevenly
    over several GPUs (each trains ``batch / GPUs`` images per step), or names a GPU this machine does not have."""
    indices = train_device(device)  # cuda:N -> N, cuda -> 0, auto -> 0 or cpu; a GPU list as it is
    if indices == "cpu":
        return
    wanted = [int(i) for i in indices.split(",")]
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"device {device!r} names a GPU twice")
    if batch % len(wanted):
        raise ValueError(f"batch {batch} does not split evenly over the {len(wanted)} GPUs of {device!r} (each GPU "
                         f"trains batch / GPUs images per step): give a batch that is a multiple of {len(wanted)}")
    import torch

    have = torch.cuda.device_count()
    if max(wanted) >= have:
        raise ValueError(f"device {device!r} asks for GPUs {sorted(set(wanted))}; this machine has {have} "
                         f"({'indices 0-' + str(have - 1) if have else 'no CUDA GPU'})")


def resolve_device(device: str = "auto") -> Any:
    """``auto`` -> first CUDA GPU if present, else CPU; a bare index ``N`` -> ``cuda:N`` (a ``torch.device``).

    Raises ``ValueError`` when a CUDA device is asked for on a machine without one.
    """
    import torch

    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.isdigit():
        device = f"cuda:{device}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available")
    return dev


def device_name(dev: Any) -> str:
    """Human name of a ``torch.device``: the GPU's name, or ``cpu (<processor>, <n> cores)``."""
    import torch

    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def train_device(device: str) -> str:
    """Ultralytics' device string for training: ``auto`` -> ``0`` with CUDA, else ``cpu``."""
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    return device.removeprefix("cuda:") if device.startswith("cuda:") else ("0" if device == "cuda" else device)
