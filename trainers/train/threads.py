"""How many torch threads a trial trains with on the CPU, epoch by epoch.

Ultralytics trains on ``cpu_count - 1`` threads (at most 8): it leaves a core for the rest of the
machine. On a 2-core machine that is one thread. Measured there (stock YOLO26n, 128 px, batch 8):

- alone, 2 threads trained 16% faster than 1 (``bench/synth_train.py --epochs 4``: 38.1/40.6 s
  against 31.9/34.3 s);
- beside one busy process, 2 threads took 97.4 s for 3 epochs and 1 thread 29.6 s: OpenMP threads
  wait on each other, and one of them is always waiting for the core the other process holds.

So the extra core pays only while nothing else wants it. ``auto`` (what ``search.run`` uses)
gives it at the start of every epoch: Ultralytics' count plus the core it leaves, when the other
processes on the cores this one may use took less than :data:`IDLE_CORES` of CPU since the last
look (before the first epoch: since the trainer was built); Ultralytics' count otherwise. While
training on the extra core it looks again every :data:`CHECK_EVERY_S` seconds, between batches,
and hands the core back as soon as another process uses it: a neighbour that starts mid-epoch
costs a few seconds at the wrong count, not an epoch. The count each epoch ended on is recorded
(``TrialResult.epoch_threads``).

Measured with ``bench/synth_train.py --epochs 3 --threads auto`` on that machine: alone, epochs
on ``[2, 2, 2]`` threads, 22.8 s; beside ``python -c "while True: pass"``, ``[1, 1, 1]``, 26.9 s,
as fast as a fixed 1 thread there (26.8 s) where a fixed 2 took 97.4 s.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Final

AUTO: Final = "auto"
IDLE_CORES: Final = 0.5  # others' CPU use, in cores, below which the spare core goes to training
MIN_WINDOW_S: Final = 0.5  # shortest interval others' CPU use is measured over
CHECK_EVERY_S: Final = 2.0  # how often, training on the extra core, others' use is looked at again


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity; every CPU where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


class OtherCpuUse:
    """CPU time the *other* processes took on this process's CPUs, in cores, between two readings.

    Busy time of those CPUs (everything but idle, iowait and steal, from ``psutil``) minus this
    process's own user and system time. The first :meth:`cores` call measures since construction.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil, self._me, self.cpus = psutil, psutil.Process(), usable_cores()
        self._last = self._reading()

    def seconds_since_reading(self) -> float:
        """Seconds since the last successful reading (construction or :meth:`cores`)."""
        return time.monotonic() - self._last[0]

    def _reading(self) -> tuple[float, float, float]:
        per_cpu = self._psutil.cpu_times(percpu=True)
        busy = 0.0
        for i in self.cpus:
            if i < len(per_cpu):
                t = per_cpu[i]
                busy += sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) \
                    - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)  # guest time is in user already
        mine = self._me.cpu_times()
        return time.monotonic(), busy, mine.user + mine.system

    def cores(self) -> float:
        """Cores the other processes used on average since the last call (waits to a 0.5 s window).

        Infinite when the CPU times cannot be read any more: then the machine counts as busy.
        """
        wait = MIN_WINDOW_S - self.seconds_since_reading()
        if wait > 0:
            time.sleep(wait)
        try:
            now = self._reading()
        except Exception:  # psutil.Error, OSError: a thread count is not worth failing a trial for
            return math.inf
        (t0, busy0, mine0), (t1, busy1, mine1) = self._last, now
        self._last = now
        return max(0.0, (busy1 - busy0) - (mine1 - mine0)) / max(t1 - t0, 1e-9)


def auto_thread_count(base: int, cores: int, others_cores: float) -> int:
    """``base`` threads plus the spare core when the others left it idle (``others_cores`` < 0.5)."""
    return min(cores, base + 1) if others_cores < IDLE_CORES else base


class AutoThreads:
    """The ``auto`` rule on a trainer's events: the spare core given at epoch start, taken back mid-epoch."""

    def __init__(self, base: int, probe: OtherCpuUse) -> None:
        self.base, self.cores, self.probe = base, len(probe.cpus), probe

    def on_epoch_start(self, trainer: Any = None) -> None:
        """Ultralytics' count, plus the spare core when the others left it idle since the last look."""
        import torch

        torch.set_num_threads(auto_thread_count(self.base, self.cores, self.probe.cores()))

    def on_batch_end(self, trainer: Any = None) -> None:
        """On the extra core, every ``CHECK_EVERY_S``: back to Ultralytics' count once another process wants it."""
        import torch

        if torch.get_num_threads() <= self.base or self.probe.seconds_since_reading() < CHECK_EVERY_S:
            return
        if self.probe.cores() >= IDLE_CORES:
            torch.set_num_threads(self.base)


def cpu_threads(trainer: Any, threads: int | str | None) -> list[int]:
    """Train on ``threads`` torch threads on the CPU; the list it fills with the count each epoch ended on.

    ``None``: Ultralytics' own count; an integer: that many; ``"auto"``: :class:`AutoThreads`, as
    the module docstring says. Set after the trainer is built, since its ``select_device`` sets
    Ultralytics' count. The list stays empty off the CPU.
    """
    import torch

    seen: list[int] = []
    if trainer.device.type != "cpu":
        return seen
    if threads == AUTO:
        try:
            probe = OtherCpuUse()
        except Exception:  # CPU times unreadable here (psutil.Error, OSError): Ultralytics' count throughout
            pass
        else:
            auto = AutoThreads(torch.get_num_threads(), probe)
            trainer.add_callback("on_train_epoch_start", auto.on_epoch_start)
            trainer.add_callback("on_train_batch_end", auto.on_batch_end)
    elif threads:
        torch.set_num_threads(int(threads))
    trainer.add_callback("on_train_epoch_end", lambda _: seen.append(torch.get_num_threads()))
    return seen


def thread_count_arg(name: str) -> Any:
    """argparse ``type=`` for ``auto`` or a thread count in [1, 1024], with a message naming ``name``."""
    import argparse

    def parse(text: str) -> int | str:
        if text == AUTO:
            return AUTO
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= 1024:
            raise argparse.ArgumentTypeError(f"{name} must be auto or an integer in [1, 1024], got {text!r}")
        return value

    return parse
