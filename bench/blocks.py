"""Benchmark of the re-parameterizable blocks: latency unfused vs fused, params, FLOPs, training cost.

Run from the repository root::

    /work/venv/bin/python bench/blocks.py                 # CPU, about a minute on 2 cores
    /work/venv/bin/python bench/blocks.py --device cuda   # fp16, CUDA graph, CUDA events

Per block at 256 channels, 80x80, batch 1: inference latency (median, p90, coefficient of
variation) of the training form and of the fused form, parameters and FLOPs
(``torch.utils.flop_counter.FlopCounterMode``: convs and matmuls, 2 FLOPs per multiply-add;
BatchNorm and activations are not counted). Then OREPAConv vs RepConv of the same shape:
one training step's (forward + backward + SGD step) time and memory, at batch 1 and 4. Memory is, on CUDA,
the peak of ``torch.cuda.max_memory_allocated`` above the model's own footprint; on CPU, the
bytes of the distinct tensors autograd saves for backward
(``torch.autograd.graph.saved_tensors_hooks``), the part that grows with the feature map.

Latency on CPU: ``torch.set_num_threads(--threads)``, ``--warmup`` untimed runs, then
``--repeats`` timed runs with ``time.perf_counter``. On CUDA: the model in fp16, one forward
captured in a CUDA graph and each replay timed with CUDA events. Not a test: prints numbers.
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# This file is named like the ``blocks`` package; when run as a script its own folder comes
# first on sys.path and would shadow the package, so put the repository root there instead.
_ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == _ROOT / "bench":
    sys.path[0] = str(_ROOT)


def _blocks_package() -> ModuleType:
    """The ``blocks`` package (imported by name: this file's own module name shadows it)."""
    return importlib.import_module("blocks")


@dataclass(frozen=True)
class Timing:
    """Summary of repeated latency measurements, in milliseconds."""

    median_ms: float
    p90_ms: float
    cv: float

    @staticmethod
    def of(times_ms: list[float]) -> Timing:
        """Median, 90th percentile and coefficient of variation of ``times_ms``."""
        ordered = sorted(times_ms)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        mean = statistics.fmean(ordered)
        return Timing(statistics.median(ordered), p90, statistics.pstdev(ordered) / mean if mean else 0.0)

    def cell(self) -> str:
        """``median/p90 (cv%)`` as a table cell."""
        return f"{self.median_ms:8.3f}/{self.p90_ms:8.3f} ({100 * self.cv:4.1f}%)"


def block_factories(c: int) -> list[tuple[str, Callable[[], nn.Module]]]:
    """``(name, factory)`` for every block to measure at ``c`` channels; absent modules are skipped."""
    blocks = _blocks_package()
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


def count_params(module: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (convs and matmuls; 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return counter.get_total_flops()


def time_cpu(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> Timing:
    """Latency of ``module(x)`` on CPU, ``repeats`` timed runs after ``warmup`` untimed ones."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(x)
            times.append(1e3 * (time.perf_counter() - t0))
    return Timing.of(times)


def time_cuda_graph(module: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> Timing:
    """Latency of one CUDA-graph replay of ``module(x)``, each replay timed with CUDA events."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(max(3, warmup)):  # warm-up on a side stream before capture, as required
            module(x)
    torch.cuda.current_stream().wait_stream(stream)
    run = _graph_replay(module, x)
    if run is None:  # capture fails on ops that sync with the host: time eager, and say so
        print(f"# {type(module).__name__}: CUDA graph capture failed, timed eagerly", file=sys.stderr)

        def run() -> None:
            with torch.no_grad():
                module(x)

    for _ in range(warmup):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return Timing.of(times)


def _graph_replay(module: nn.Module, x: torch.Tensor) -> Callable[[], None] | None:
    """``replay`` of a CUDA graph holding one ``module(x)``, or ``None`` if capture fails."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.no_grad(), torch.cuda.graph(graph):
            module(x)
    except RuntimeError:
        torch.cuda.synchronize()
        return None
    return graph.replay


def fused_copy(module: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``module`` with every re-parameterizable part fused (in float32)."""
    twin = copy.deepcopy(module).eval()
    _blocks_package().reparameterize_model(twin)
    return twin


@dataclass(frozen=True)
class BlockRow:
    """One table row: a block's size and its latency unfused and fused."""

    name: str
    params: tuple[int, int]
    flops: tuple[int, int]
    latency: tuple[Timing, Timing]


def measure_block(name: str, make: Callable[[], nn.Module], args: argparse.Namespace) -> BlockRow:
    """Params, FLOPs and latency of the training form and of the fused form of one block."""
    dev = torch.device(args.device)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    unfused = make().eval()
    fused = fused_copy(unfused)
    params = (count_params(unfused), count_params(fused))
    flops = (count_flops(unfused, x), count_flops(fused, x))
    timings = []
    for module in (unfused, fused):
        if dev.type == "cuda":
            m, xin = module.to(dev).half(), x.to(dev).half()
            timings.append(time_cuda_graph(m, xin, args.warmup, args.repeats))
        else:
            timings.append(time_cpu(module, x, args.warmup, args.repeats))
    return BlockRow(name, params, flops, (timings[0], timings[1]))


def saved_tensor_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves for backward in one forward.

    Parameters are left out (they are in memory anyway); the input ``x`` is counted.
    """
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


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
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step(module, x, opt)
        torch.cuda.synchronize()
        memory = torch.cuda.max_memory_allocated() - base
    else:
        memory = saved_tensor_bytes(module, x)
    times = []
    for _ in range(args.train_repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(module, x, opt)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return Timing.of(times), memory


def print_machine(args: argparse.Namespace) -> None:
    """Header: machine, torch version and the measurement settings."""
    print(f"# machine: {platform.platform()} | {platform.processor() or platform.machine()} "
          f"| {os.cpu_count()} CPUs | python {platform.python_version()}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# torch {torch.__version__} | GPU: {gpu} | device used: {args.device}")
    if args.device == "cpu":
        print(f"# CPU float32, torch.set_num_threads({args.threads}), warm-up {args.warmup}, "
              f"{args.repeats} repeats, batch {args.batch}, {args.channels} ch, {args.size}x{args.size}")
    else:
        print(f"# CUDA fp16, one CUDA-graph replay per timing (CUDA events), warm-up {args.warmup}, "
              f"{args.repeats} repeats, batch {args.batch}, {args.channels} ch, {args.size}x{args.size}")


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
    what = "peak CUDA MiB above model" if args.device != "cpu" else "saved-for-backward MiB"
    print(f"\n# training step (forward + backward + SGD), float32, {args.train_repeats} repeats; "
          + ("memory: peak allocated minus what was allocated before the step" if args.device != "cpu"
             else "memory: distinct non-parameter tensors saved for backward (input included)"))
    print(f"{'block':28} {'batch':>5} {'step ms median/p90 (cv)':>29} {what:>26}")
    for name, batch, timing, memory in results:
        print(f"{name:28} {batch:5d} {timing.cell():>29} {memory / 2**20:26.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per latency (>= 30 advised)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads")
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--size", type=int, default=80, help="input height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train-batches", type=int, nargs="+", default=[1, 4], help="training-step batch sizes")
    p.add_argument("--train-repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda"):
        p.error(f"--device must be one of ['auto', 'cpu', 'cuda'], got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> None:
    """Print the machine, the per-block table and the OREPA vs RepConv training table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print_machine(args)
    factories = block_factories(args.channels)
    print_blocks([measure_block(name, make, args) for name, make in factories])
    blocks, c = _blocks_package(), args.channels
    pair = [("RepConv 3x3", lambda: blocks.RepConv(c, c, 3)), ("OREPAConv 3x3", lambda: blocks.OREPAConv(c, c, 3))]
    training = [
        (name, batch, *measure_training(make, batch, args)) for batch in args.train_batches for name, make in pair
    ]
    print_training(training, args)


if __name__ == "__main__":
    main()
