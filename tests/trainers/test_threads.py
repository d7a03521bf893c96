"""Training threads on the CPU: the auto rule, the probe of other processes' CPU use, the wiring."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from trainers.train import threads
from trainers.train.threads import AUTO, OtherCpuUse, auto_thread_count, cpu_threads, thread_count_arg, usable_cores


@pytest.mark.parametrize(
    ("base", "cores", "others", "expected"),
    [
        (1, 2, 0.0, 2),  # 2 idle cores: the spare one trains too
        (1, 2, 0.49, 2),
        (1, 2, 0.5, 1),  # a neighbour uses half a core: leave it the spare one
        (1, 2, 1.3, 1),
        (8, 16, 0.1, 9),  # Ultralytics caps at 8: one more, not all 16
        (1, 1, 0.0, 1),  # no spare core to give
    ],
)
def test_auto_adds_the_spare_core_only_while_others_leave_it_idle(base: int, cores: int, others: float,
                                                                   expected: int) -> None:
    assert auto_thread_count(base, cores, others) == expected


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_probe_counts_other_processes_and_not_this_one() -> None:
    probe = OtherCpuUse()
    _spin(1.5)  # this process busy: not "others"
    self_busy = probe.cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        probe.cores()  # reset the window once the neighbour runs
        time.sleep(1.5)
        neighbour = probe.cores()
    finally:
        spinner.kill()
        spinner.wait()
    assert neighbour - self_busy > 0.6, (self_busy, neighbour)  # the neighbour took about one core more


def test_the_probe_waits_for_a_window_long_enough_to_mean_something() -> None:
    probe = OtherCpuUse()
    probe.cores()
    t0 = time.monotonic()
    probe.cores()
    assert time.monotonic() - t0 >= threads.MIN_WINDOW_S * 0.9


class _Trainer:
    """Just the parts of an Ultralytics trainer ``cpu_threads`` uses: its device and callbacks."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.callbacks: dict[str, list[Callable[[Any], None]]] = {}

    def add_callback(self, event: str, fn: Callable[[Any], None]) -> None:
        self.callbacks.setdefault(event, []).append(fn)

    def fire(self, event: str) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self)

    def epoch(self, batches: int = 0) -> None:
        self.fire("on_train_epoch_start")
        for _ in range(batches):
            self.fire("on_train_batch_end")
        self.fire("on_train_epoch_end")


@pytest.fixture
def restore_threads() -> Any:
    """One torch thread, as Ultralytics sets on 2 cores (its ``cpu_count - 1``); the old count back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(before)


def test_auto_decides_every_epoch_from_the_last_one(monkeypatch: pytest.MonkeyPatch, restore_threads: int) -> None:
    readings = iter([0.0, 1.0, 0.2])  # idle, a neighbour, idle again
    monkeypatch.setattr(OtherCpuUse, "cores", lambda self: next(readings))
    trainer = _Trainer("cpu")
    seen = cpu_threads(trainer, AUTO)
    for _ in range(3):
        trainer.epoch()
    base, cores = restore_threads, len(usable_cores())
    spare = min(cores, base + 1)
    assert seen == [spare, base, spare]


def test_auto_hands_the_core_back_mid_epoch_when_a_neighbour_starts(monkeypatch: pytest.MonkeyPatch,
                                                                   restore_threads: int) -> None:
    base, cores = restore_threads, len(usable_cores())
    if cores <= base:
        pytest.skip("no spare core on this machine")
    readings = iter([0.0, 0.1, 0.9, 0.0, 0.2])  # epoch 1: idle, idle, a neighbour; epoch 2: idle, idle
    looks: list[float] = []

    def cores_now(self: OtherCpuUse) -> float:
        looks.append(1.0)
        return next(readings)

    monkeypatch.setattr(OtherCpuUse, "cores", cores_now)
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)
    trainer = _Trainer("cpu")
    seen = cpu_threads(trainer, AUTO)
    trainer.epoch(batches=3)  # looks at the start and after batches 1 and 2, then back to Ultralytics' count
    trainer.epoch(batches=1)
    assert seen == [base, base + 1] and len(looks) == 5  # no look on Ultralytics' count (batch 3)


def test_unreadable_cpu_times_leave_ultralytics_count_and_fail_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                       restore_threads: int) -> None:
    import psutil

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("/proc/stat")

    monkeypatch.setattr(psutil, "cpu_times", refused)
    trainer = _Trainer("cpu")
    seen = cpu_threads(trainer, AUTO)  # the probe cannot even start
    trainer.epoch(batches=2)
    assert seen == [restore_threads] and trainer.callbacks.keys() == {"on_train_epoch_end"}

    monkeypatch.undo()
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)
    trainer = _Trainer("cpu")
    seen = cpu_threads(trainer, AUTO)
    torch.set_num_threads(restore_threads)
    monkeypatch.setattr(psutil, "cpu_times", refused)  # readable at first, then not: counts as busy
    trainer.epoch(batches=2)
    assert seen == [restore_threads]


def test_a_fixed_count_holds_and_nothing_is_set_off_the_cpu(restore_threads: int) -> None:
    trainer = _Trainer("cpu")
    seen = cpu_threads(trainer, 3)
    trainer.epoch()
    trainer.epoch()
    assert seen == [3, 3] and "on_train_epoch_start" not in trainer.callbacks
    torch.set_num_threads(restore_threads)
    off = _Trainer("meta")
    assert cpu_threads(off, AUTO) == [] and off.callbacks == {}
    assert torch.get_num_threads() == restore_threads


def test_the_flag_takes_auto_or_a_count_and_names_itself_otherwise() -> None:
    import argparse

    parse = thread_count_arg("--train-threads")
    assert parse("auto") == AUTO and parse("4") == 4
    for bad in ("0", "x", "2.5", "AUTO"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"--train-threads must be auto or an integer"):
            parse(bad)
