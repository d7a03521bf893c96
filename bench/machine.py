"""What a benchmark's numbers were measured on: the machine, the versions, the device, the load.

Shared by the scripts in ``bench/``, which import it as ``from machine import ...`` (a script's
own folder is first on ``sys.path``). torch is imported only when a function is called, so a
script's ``--help`` stays fast.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["busy_warning", "cpu_model", "machine_lines", "print_machine"]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_lines(device: Any = None) -> list[str]:
    """Header lines: OS, CPU, load, package versions, torch threads, GPU, and ``device`` when given.

    ``device`` is the ``torch.device`` the numbers are measured on; ``None`` where the
    benchmark's subprocesses choose it.
    """
    import torch

    from trainers.train.devices import device_name
    from trainers.versions import versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        f"# machine: {platform.platform()} | {cpu_model()} | "
        f"{os.cpu_count()} logical CPUs | load average {os.getloadavg()[0]:.2f}",
        "# " + " | ".join(f"{name} {version}" for name, version in versions().items())
        + f" | torch threads {torch.get_num_threads()}",
        f"# GPU: {gpu}" + (f" | device used: {device_name(device)} ({device})" if device is not None else ""),
    ]


def busy_warning(threads: int) -> str | None:
    """A warning line when the load average plus ``threads`` exceeds the CPUs (timings then are inflated)."""
    busy, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if busy + threads <= cpus + 0.5:
        return None
    return (f"# WARNING: load average {busy:.2f} + {threads} threads > {cpus} CPUs: "
            "threads compete, CPU timings (and their CV) are inflated")


def print_machine(device: Any = None, threads: int | None = None) -> None:
    """Print :func:`machine_lines`, then :func:`busy_warning` when ``device`` is a CPU timed with ``threads``."""
    for line in machine_lines(device):
        print(line)
    warning = busy_warning(threads) if threads is not None and getattr(device, "type", None) == "cpu" else None
    if warning:
        print(warning)
