"""Benchmark: how far the latency of a search space's architectures reaches below and above stock YOLO26.

Run from the repository root::

    python3 bench/space_range.py                          # default space, 30 samples, CPU, 640 px, 1 thread
    python3 bench/space_range.py --n 60 --seed 1 --rounds 10
    python3 bench/space_range.py --space my_space.yaml --imgsz 320
    python3 bench/space_range.py --device cuda:0         # fused fp16 in CUDA graphs (``--dtype auto``)

Architectures (untrained: latency does not depend on the weights): ``--n`` drawn from the space
by Optuna's random sampler (``--seed``), plus its corners: for every block the space lists, the
*fast* corner (narrowest width, fewest blocks, no SE, the smallest kernel set, the plain Conv
downsample where listed) and the *slow* corner (widest, deepest, SE on where the block takes it,
a dynamic SE where listed, the largest kernel set). Corners are picked by :class:`Corner`, a trial that
answers every parameter of ``SearchSpace.suggest`` by rule, so they are architectures of the
space and nothing else.

Latency: :func:`trainers.latency.interleaved.measure_interleaved`, the fused model with the
space's head, torch backend, on ``--device`` (CPU with ``--threads`` threads by default; on a
CUDA device the fused model in ``--dtype`` replayed as a CUDA graph) at ``--imgsz``. Models are
measured in groups of ``--group``, the stock model in every group, round-robin (``--rounds``
rounds of ``--repeats`` timed forwards each), and each architecture's ratio is its median over
the stock model's median *of its own group*: only figures measured interleaved are comparable
on a shared CPU (``PITFALLS.md``). Prints one row per architecture, then the min / q1 / median / q3 / max
ratio and the share below 0.85x over all of them, over the random samples alone and over the
corners, and the machine. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import print_machine

from search.space.corners import corners, samples
from trainers.cli import OneLineParser, fail, log, positive_int, quiet_ultralytics

REPO = Path(__file__).resolve().parents[1]
def shape_of(arch: Any) -> str:
    """Per stage ``width x depth`` (``-`` for the stock depth), e.g. ``0.5x2 1x- ...``."""
    return " ".join(f"{c.width:g}x{c.depth or '-'}" for _, c in arch.stages)


def measure_groups(archs: dict[str, Any], setting: Any, group: int, rounds: int, repeats: int,
                   nc: int) -> dict[str, tuple[float, float]]:
    """Name -> (median ms, ratio to the stock model measured in the same group)."""
    from search.predict.fit import Measurement, stock_groups

    names, out = list(archs), {}
    how = Measurement(rounds=rounds, repeats=repeats, group=group, nc=nc)
    reports = [(r, stock) for _, rs, stock in stock_groups([archs[k] for k in names], setting, how, log) for r in rs]
    for k, (r, stock) in zip(names, reports):
        out[k] = (r.median_ms, r.median_ms / stock)
    return out


FAST = 0.85  # the share of ratios below this is printed: "clearly faster than stock"


def summary(label: str, ratios: Sequence[float]) -> str:
    """``label: min / q1 / median / q3 / max`` of latency ratios and the share below :data:`FAST`.

    Quartiles are ``statistics.quantiles(..., method="inclusive")`` (q1 and q3 of the ratios
    themselves, interpolated); with one ratio they are that ratio.
    """
    q1, med, q3 = (statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1
                   else [ratios[0]] * 3)
    fast = sum(r < FAST for r in ratios)
    return (f"{label:<22} n={len(ratios):>3}  min {min(ratios):.2f}x  q1 {q1:.2f}x  median {med:.2f}x  "
            f"q3 {q3:.2f}x  max {max(ratios):.2f}x  below {FAST}x: {fast}/{len(ratios)} "
            f"({100 * fast / len(ratios):.0f}%)")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python3 bench/space_range.py", description=__doc__.split("\n")[0])
    p.add_argument("--space", default=str(REPO / "spaces" / "yolo26.yaml"))
    p.add_argument("--n", type=positive_int("--n", 1, 10000), default=30, help="random samples")
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--group", type=positive_int("--group", 1, 64), default=6, help="models per group (+ stock)")
    p.add_argument("--rounds", type=positive_int("--rounds", 1, 1000), default=10)
    p.add_argument("--repeats", type=positive_int("--repeats", 1, 1000), default=2)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=640)
    p.add_argument("--threads", type=positive_int("--threads", 1, 256), default=1)
    p.add_argument("--nc", type=positive_int("--nc", 1, 10000), default=80)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto: float16 on CUDA, float32 on the CPU")
    return p


def main() -> None:
    """Sample, measure, print."""
    args = _parser().parse_args()
    from search.space import SearchSpace, SpaceError

    try:
        space = SearchSpace.load(args.space)
    except SpaceError as e:
        fail(str(e))
    quiet_ultralytics()
    import torch

    from trainers.latency.setting import LatencySetting

    torch.set_num_threads(args.threads)
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        fail(f"--device must be cpu or cuda[:N] on a machine with CUDA, got {args.device!r}")
    setting = LatencySetting(imgsz=args.imgsz, device=args.device, dtype=args.dtype, threads=args.threads,
                             head=space.spec.head)
    edges, drawn = corners(space), samples(space, args.n, args.seed)
    archs = {**edges, **drawn}
    t0 = time.perf_counter()
    measured = measure_groups(archs, setting, args.group, args.rounds, args.repeats, args.nc)

    print(f"# space {args.space}: {space.size()} architectures, {space.dimensions()} dimensions; "
          f"{len(drawn)} samples (seed {args.seed}) + {len(edges)} corners")
    where = (f"cpu, {args.threads} thread(s)" if args.device == "cpu"
             else f"{args.device} ({args.dtype} dtype, CUDA graph)")
    print(f"# torch on {where}, {args.imgsz} px, fused, head {space.spec.head}, "
          f"{args.rounds} rounds x {args.repeats} forwards, groups of {args.group} + stock")
    print(f"{'name':<18} {'hash':<12} {'ms':>8} {'ratio':>6}  blocks / width x depth per stage")
    for name, arch in archs.items():
        ms, ratio = measured[name]
        print(f"{name:<18} {arch.hash:<12} {ms:8.3f} {ratio:5.2f}x  {arch.blocks_summary()} / {shape_of(arch)}")
    print(summary("all", [measured[k][1] for k in archs]))
    print(summary("random samples", [measured[k][1] for k in drawn]))
    print(summary("corners", [measured[k][1] for k in edges]))
    print(f"# measured in {time.perf_counter() - t0:.0f} s")
    print_machine(torch.device(args.device), args.threads)


if __name__ == "__main__":
    main()
