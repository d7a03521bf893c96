"""The backend comparison of ``bench/latency.py --backends``: torch, ONNX Runtime and OpenVINO on one CPU.

Every (architecture, backend) is measured by the backend's own ``measure`` (what a trial's
latency report times: fused copy, ``nms_free`` head pinned, float32, ``--threads`` threads; the
ONNX backends export and compile per measurement), ``--repeats`` rounds, round-robin over all
architectures and backends in one process, so a change of the machine's load lands on every
cell. A cell gives the median and its order-statistic interval over all its timed forwards,
their coefficient of variation, and the CV of the rounds' medians (run-to-run drift).

Rank agreement: Kendall's tau between each pair of backends over the architectures' medians
(1: the same order, -1: reversed), and each backend's order. A search that ranks architectures
with one backend and deploys with another needs the two orders to agree; pairs whose medians
are within each other's intervals are ties in all but name, and listed as such.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from search.pareto.ranks import kendall_tau
from trainers.cli import log

__all__ = ["Cell", "run_backend_comparison"]


@dataclass
class Cell:
    """One (architecture, backend): the reports of its rounds."""

    arch: str
    backend: str
    reports: list[Any] = field(default_factory=list)

    def pooled(self) -> dict[str, float]:
        """Median, interval and CV of all rounds' timed forwards (:func:`trainers.latency.timing.summarize`)."""
        from trainers.latency.timing import summarize

        return summarize([t for r in self.reports for t in r.samples])

    @property
    def cv_between(self) -> float:
        """Coefficient of variation of the rounds' medians."""
        medians = [r.median_ms for r in self.reports]
        mean = statistics.fmean(medians)
        return statistics.pstdev(medians) / mean if len(medians) > 1 and mean > 0 else 0.0


def usable_backends(names: list[str], setting: Any) -> tuple[list[str], dict[str, str]]:
    """The backends of ``names`` that can measure ``setting`` here, and why each of the others cannot."""
    from dataclasses import replace

    from trainers.latency.backends import get_backend

    reasons = {name: get_backend(name).unavailable(replace(setting, backend=name)) for name in names}
    return [n for n in names if reasons[n] is None], {n: why for n, why in reasons.items() if why is not None}


def measure_cells(models: dict[str, Any], names: list[str], setting: Any,
                  args: argparse.Namespace) -> tuple[dict[tuple[str, str], Cell], dict[str, float]]:
    """Every (architecture, backend) cell, ``args.repeats`` rounds round-robin; wall seconds per backend."""
    from dataclasses import replace

    from trainers.latency.backends import get_backend

    cells = {(a, b): Cell(a, b) for a in models for b in names}
    walls = dict.fromkeys(names, 0.0)
    for r in range(args.repeats):
        for arch, model in models.items():
            for name in names:
                t0 = time.perf_counter()
                report = get_backend(name).measure(model, replace(setting, backend=name), warmup=args.warmup,
                                                   repeats=args.iters, min_seconds=0.0)
                walls[name] += time.perf_counter() - t0
                cells[(arch, name)].reports.append(report)
                log(f"  round {r + 1}/{args.repeats} {arch:16} {name:11} {report.median_ms:9.2f} ms "
                    f"(cv {100 * report.cv:.1f}%)")
    return cells, walls


def print_cells(cells: dict[tuple[str, str], Cell], archs: list[str], names: list[str]) -> None:
    """One line per (architecture, backend): median, interval, CVs, and the ratio to the first backend."""
    print(f"\n{'architecture':18} {'backend':11} {'version':>12} {'median ms':>10} {'interval ms':>17} "
          f"{'cv':>6} {'cv runs':>8} {'n':>4} {'vs ' + names[0]:>10}")
    for arch in archs:
        base = cells[(arch, names[0])].pooled()["median_ms"]
        for name in names:
            cell = cells[(arch, name)]
            s, version = cell.pooled(), cell.reports[0].backend_version.split("-")[0]
            interval = f"[{s['ci_low_ms']:.1f}, {s['ci_high_ms']:.1f}]"
            print(f"{arch:18} {name:11} {version:>12} {s['median_ms']:10.2f} {interval:>17} {100 * s['cv']:5.1f}% "
                  f"{100 * cell.cv_between:7.1f}% {sum(r.n for r in cell.reports):4d} "
                  f"{s['median_ms'] / base:9.2f}x")


def print_rank_agreement(cells: dict[tuple[str, str], Cell], archs: list[str], names: list[str]) -> None:
    """Each backend's order of the architectures, and Kendall's tau with the pairs it orders differently."""
    stats = {key: cell.pooled() for key, cell in cells.items()}
    medians = {name: [stats[(a, name)]["median_ms"] for a in archs] for name in names}
    print(f"\n# rank agreement over {len(archs)} architectures (Kendall tau-a; with {len(archs)} architectures "
          f"tau moves in steps of {2 / (len(archs) * (len(archs) - 1) / 2):.2f})")
    for name in names:
        order = sorted(archs, key=lambda a: stats[(a, name)]["median_ms"])
        print(f"#   {name:11} fastest first: " + " < ".join(order))
    for b1, b2 in itertools.combinations(names, 2):
        tau = kendall_tau(medians[b1], medians[b2])
        flipped = []
        for (i, a1), (j, a2) in itertools.combinations(enumerate(archs), 2):
            if (medians[b1][i] - medians[b1][j]) * (medians[b2][i] - medians[b2][j]) < 0:
                noise = any(_overlap(stats[(a1, b)], stats[(a2, b)]) for b in (b1, b2))
                flipped.append(f"{a1} vs {a2}" + (" (within noise)" if noise else ""))
        print(f"#   {b1} vs {b2}: tau {tau:+.2f}" + (f"; ordered differently: {', '.join(flipped)}" if flipped else ""))


def _overlap(x: dict[str, float], y: dict[str, float]) -> bool:
    """Whether two cells' median intervals overlap."""
    return x["ci_low_ms"] <= y["ci_high_ms"] and y["ci_low_ms"] <= x["ci_high_ms"]


def run_backend_comparison(archs: dict[str, Any], names: list[str], args: argparse.Namespace) -> None:
    """Build every architecture once, measure every usable backend round-robin, print the tables."""
    from trainers.latency.setting import LatencySetting
    from trainers.model.build import build_model

    setting = LatencySetting(args.imgsz, "cpu", "float32", 1, args.threads, names[0], "nms_free")
    usable, skipped = usable_backends(names, setting)
    for name, why in skipped.items():
        print(f"# {name} skipped: {why}")
    if not usable:
        print("# no backend can measure here")
        return
    print(f"# backends {', '.join(usable)}: CPU float32, batch 1, {args.imgsz} px, {args.threads} thread(s), head "
          f"nms_free; warm-up {args.warmup}, {args.iters} timed per round, {args.repeats} rounds round-robin")
    models = {}
    for name, arch in archs.items():
        log(f"{name} ({arch.hash}): {arch.blocks_summary()}")
        models[name] = build_model(arch, nc=80)
    t0 = time.perf_counter()
    cells, walls = measure_cells(models, usable, setting, args)
    print_cells(cells, list(archs), usable)
    if len(usable) > 1 and len(archs) > 1:
        print_rank_agreement(cells, list(archs), usable)
    print(f"\n# wall time {time.perf_counter() - t0:.0f} s; per backend (copy, export, compile, timing): "
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items()))
