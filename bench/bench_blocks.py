"""Benchmark of the re-parameterizable blocks: latency unfused vs fused, params, FLOPs, training cost.

Run from the repository root::

    python3 bench/bench_blocks.py                 # CPU, about a minute on 2 cores
    python3 bench/bench_blocks.py --device cuda   # fp16, CUDA graph, CUDA events

Per block at 256 channels, 80x80, batch 1: inference latency (median, p90, coefficient of
variation) of the training form and of the fused form, parameters and FLOPs
(``torch.utils.flop_counter.FlopCounterMode``: convs and matmuls, 2 FLOPs per multiply-add;
BatchNorm and activations are not counted). Then OREPAConv vs RepConv of the same shape:
one training step's (forward + backward + SGD step) time and memory, at batch 1 and 4. Memory is, on CUDA,
the peak of ``torch.cuda.max_memory_allocated`` above the model's own footprint; on CPU, the
bytes of the distinct tensors autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``), the part that grows with the feature map.

Latency is timed by :mod:`trainers.latency.timing`, the loops behind a trial's latency report.
On CPU: ``torch.set_num_threads(--threads)``, ``--warmup`` untimed runs, then ``--repeats``
timed runs with ``time.perf_counter`` (``time_cpu``). On CUDA: the model in fp16, one forward
captured in a CUDA graph and each replay timed with CUDA events (``time_cuda``; eager, and said
so on stderr, where capture fails). The fused form is :func:`trainers.deploy.inference.fused_copy`
without Ultralytics' ``fuse()`` (a bare block has none): :func:`blocks.reparameterize_model` on
an eval-mode copy. Not a test: prints numbers.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from machine import print_machine
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import blocks
from trainers.cli import OneLineParser, device_arg, positive_int
from trainers.deploy.inference import count_params, fused_copy
from trainers.latency.timing import summarize, time_cpu, time_cuda
from trainers.train.devices import resolve_device
from trainers.train.memory import saved_tensor_bytes


@dataclass(frozen=True)
class Timing:
    """Summary of repeated latency measurements, in milliseconds."""

    median_ms: float
    p90_ms: float
    cv: float

    @staticmethod
    def of(times_ms: list[float]) -> Timing:
        """Median, 90th percentile and coefficient of variation of ``times_ms`` (see ``summarize``)."""
        summary = summarize(times_ms)
        return Timing(summary["median_ms"], summary["p90_ms"], summary["cv"])

    def cell(self) -> str:
        """``median/p90 (cv%)`` as a table cell."""
        return f"{self.median_ms:8.3f}/{self.p90_ms:8.3f} ({100 * self.cv:4.1f}%)"


def block_factories(c: int) -> list[tuple[str, Callable[[], nn.Module]]]:
    """``(name, factory)`` for every block to measure at ``c`` channels; absent modules are skipped."""
    wanted: list[tuple[str, str, Callable[[type], nn.Module]]] = [
        ("RepConv 3x3", "RepConv", lambda cls: cls(c, c, 3)),
        ("RepVGGDW 3x3", "RepVGGDW", lambda cls: cls(c, 3)),
        ("MultiScaleRepVGGDW (3,5,7)", "MultiScaleRepVGGDW", lambda cls: cls(c, (3, 5, 7))),
        ("OREPAConv 3x3", "OREPAConv", lambda cls: cls(c, c, 3)),
        ("EfficientSE", "EfficientSE", lambda cls: cls(c)),
        ("DynamicSE", "DynamicSE", lambda cls: cls(c)),
        ("RepViTBlock", "RepViTBlock", lambda cls: cls(c, c)),
        ("C3k2_RVB_SE", "C3k2_RVB_SE", lambda cls: cls(c, c)),
    ]
    found: list[tuple[str, Callable[[], nn.Module]]] = []
    for label, name, make in wanted:
        try:
            cls = getattr(blocks, name)
        except (ImportError, AttributeError):  # written by someone else, maybe not there yet
            print(f"# skipped {name}: not importable", file=sys.stderr)
            continue
        found.append((label, functools.partial(make, cls)))
    return found


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (convs and matmuls; 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return counter.get_total_flops()


def latency(module: nn.Module, x: torch.Tensor, args: argparse.Namespace) -> Timing:
    """Latency of ``module(x)``: float32 on CPU, or fp16 CUDA-graph replays (eager if capture fails) on CUDA."""
    dev = torch.device(args.device)
    if dev.type != "cuda":
        return Timing.of(time_cpu(module, x, args.warmup, args.repeats))
    times, mode = time_cuda(module.to(dev).half(), x.to(dev).half(), args.warmup, args.repeats)
    if mode != "graph":
        print(f"# {type(module).__name__}: CUDA graph capture failed, timed {mode}", file=sys.stderr)
    return Timing.of(times)


@dataclass(frozen=True)
class BlockRow:
    """One table row: a block's size and its latency unfused and fused."""

    name: str
    params: tuple[int, int]
    flops: tuple[int, int]
    latency: tuple[Timing, Timing]


def measure_block(name: str, make: Callable[[], nn.Module], args: argparse.Namespace) -> BlockRow:
    """Params, FLOPs and latency of the training form and of the fused form of one block."""
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    unfused = make().eval()
    fused = fused_copy(unfused, ultralytics_fuse=False)  # a bare block has no Ultralytics fuse()
    params = (count_params(unfused), count_params(fused))
    flops = (count_flops(unfused, x), count_flops(fused, x))
    return BlockRow(name, params, flops, (latency(unfused, x, args), latency(fused, x, args)))


def train_step(module: nn.Module, x: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """One forward + backward + SGD step on a random-projection loss."""
    opt.zero_grad(set_to_none=True)
    module(x).float().square().mean().backward()
    opt.step()


def measure_training(make: Callable[[], nn.Module], batch: int, args: argparse.Namespace) -> tuple[Timing, int]:
    """Training-step time and memory (CUDA: peak allocated above the model; CPU: saved tensors)."""
    dev = torch.device(args.device)
    module = make().to(dev).train()
    opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, args.channels, args.size, args.size, device=dev)
    for _ in range(2):
        train_step(module, x, opt)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        train_step(module, x, opt)
        torch.cuda.synchronize(dev)
        memory = torch.cuda.max_memory_allocated(dev) - base
    else:
        memory = saved_tensor_bytes(module, x)
    times = []
    for _ in range(args.train_repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        train_step(module, x, opt)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(1e3 * (time.perf_counter() - t0))
    return Timing.of(times), memory


def print_settings(args: argparse.Namespace) -> None:
    """Header: the machine (see :mod:`machine`) and the measurement settings."""
    dev = torch.device(args.device)
    print_machine(dev, args.threads)
    how = (f"CPU float32, torch.set_num_threads({args.threads})" if dev.type == "cpu"
           else "CUDA fp16, one CUDA-graph replay per timing (CUDA events)")
    print(f"# {how}, warm-up {args.warmup}, {args.repeats} repeats, batch {args.batch}, {args.channels} ch, "
          f"{args.size}x{args.size}")


def print_blocks(rows: list[BlockRow]) -> None:
    """Latency / params / FLOPs table."""
    print(f"\n{'block':28} {'params unfused':>14} {'fused':>10} {'MFLOPs unf':>10} {'fused':>9} "
          f"{'unfused ms median/p90 (cv)':>29} {'fused ms median/p90 (cv)':>29} {'speedup':>7}")
    for r in rows:
        speedup = r.latency[0].median_ms / r.latency[1].median_ms
        print(f"{r.name:28} {r.params[0]:14,d} {r.params[1]:10,d} {r.flops[0] / 1e6:10.1f} "
              f"{r.flops[1] / 1e6:9.1f} {r.latency[0].cell():>29} {r.latency[1].cell():>29} {speedup:6.2f}x")


def print_training(results: list[tuple[str, int, Timing, int]], args: argparse.Namespace) -> None:
    """Training-step time and memory table (OREPAConv vs RepConv)."""
    cuda = torch.device(args.device).type == "cuda"
    what = "peak CUDA MiB above model" if cuda else "saved-for-backward MiB"
    print(f"\n# training step (forward + backward + SGD), float32, {args.train_repeats} repeats; "
          + ("memory: peak allocated minus what was allocated before the step" if cuda
             else "memory: distinct non-parameter tensors saved for backward (input included)"))
    print(f"{'block':28} {'batch':>5} {'step ms median/p90 (cv)':>29} {what:>26}")
    for name, batch, timing, memory in results:
        print(f"{name:28} {batch:5d} {timing.cell():>29} {memory / 2**20:26.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = OneLineParser(prog="bench/bench_blocks.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", type=device_arg, default="auto", help="cpu, cuda, cuda:N, N or auto (cuda if any)")
    p.add_argument("--repeats", type=positive_int("--repeats", 1, 100000), default=30,
                   help="timed runs per latency (>= 30 advised)")
    p.add_argument("--warmup", type=positive_int("--warmup", 1, 100000), default=5, help="untimed runs before timing")
    p.add_argument("--threads", type=positive_int("--threads", 1, 1024), default=min(2, os.cpu_count() or 1),
                   help="CPU threads")
    p.add_argument("--channels", type=positive_int("--channels", 1, 4096), default=256)
    p.add_argument("--size", type=positive_int("--size", 1, 4096), default=80, help="input height and width")
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=1)
    p.add_argument("--train-batches", type=positive_int("--train-batches", 1, 1024), nargs="+", default=[1, 4],
                   help="training-step batch sizes")
    p.add_argument("--train-repeats", type=positive_int("--train-repeats", 1, 100000), default=5)
    args = p.parse_args(argv)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as e:
        p.error(f"--device: {e}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Print the machine, the per-block table and the OREPA vs RepConv training table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print_settings(args)
    factories = block_factories(args.channels)
    print_blocks([measure_block(name, make, args) for name, make in factories])
    c = args.channels
    pair = [("RepConv 3x3", lambda: blocks.RepConv(c, c, 3)), ("OREPAConv 3x3", lambda: blocks.OREPAConv(c, c, 3))]
    training = [
        (name, batch, *measure_training(make, batch, args)) for batch in args.train_batches for name, make in pair
    ]
    print_training(training, args)


if __name__ == "__main__":
    main()
