"""Benchmark: how fast does a latency model predict architectures of a space, cold and warm?

Prediction is the cost model's sum over the fused graph's operator features
(:mod:`trainers.latency.predictor`); the features come from cached per-layer parts
(:mod:`trainers.latency.feature_cache`): an architecture with a layer never seen before is traced
(built, fused, shape-only forward), any other is a sum of cached parts. This script draws ``--archs``
architectures of ``--space`` uniformly and predicts them all in one process, then predicts them a
second time (all parts cached), and prints per-architecture times for traced and summed ones, the
share traced, and (``--check``) that a sample of summed predictions equals a full trace's.

    PYTHONPATH=.:bench python bench/latency_predict.py --space spaces/yolo26.yaml --archs 2000

With ``--model FILE`` the predictions use that cost model; without one a model with unit weights over
the features stands in (timing does not depend on the weights). Not a test: it prints numbers and the
machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from machine import print_machine

from search.space import SearchSpace
from search.space.corners import samples
from trainers.latency.feature_cache import LayerFeatureCache
from trainers.latency.features import GraphFeatures, graph_features
from trainers.latency.predictor import CostModel, TargetConditions
from trainers.latency.setting import LatencySetting
from trainers.model.build import build_model


def _model(path: str | None, graphs: list[GraphFeatures], setting: LatencySetting) -> CostModel:
    """The cost model of ``path``, or unit weights over every feature and operator of ``graphs``."""
    if path:
        return CostModel.load(path)
    features = tuple(sorted({k for g in graphs for k, _ in g.values}))
    return CostModel(conditions=TargetConditions.here(setting), features=features, weights=(1.0,) * len(features),
                     intercept=0.0, ops=frozenset().union(*(g.ops for g in graphs)), stock_ms=1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="spaces/yolo26.yaml")
    p.add_argument("--archs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="a cost model file (default: unit weights)")
    p.add_argument("--check", type=int, default=20, help="summed predictions compared with a full trace")
    args = p.parse_args()
    if args.archs < 1 or args.check < 0:
        p.error(f"--archs must be >= 1 and --check >= 0, got {args.archs} and {args.check}")
    space = SearchSpace.load(args.space)
    setting = space.spec.latency
    archs = list(samples(space, args.archs, args.seed).values())
    cache = LayerFeatureCache(setting.imgsz, setting.head, nc=80)
    traced, summed, first = [], [], []
    t_all = time.perf_counter()
    for i, arch in enumerate(archs):
        before, t0 = cache.traced, time.perf_counter()
        first.append(cache.features(arch))
        (traced if cache.traced > before else summed).append(time.perf_counter() - t0)
        if (i + 1) % 250 == 0:
            print(f"{i + 1}/{len(archs)}: {cache.traced} traced, {len(cache)} layer parts, "
                  f"{time.perf_counter() - t_all:.0f} s", flush=True)
    pass1 = time.perf_counter() - t_all
    model = _model(args.model, first, setting)
    t0 = time.perf_counter()
    for arch in archs:
        model.predict_ms(cache.features(arch))
    warm = (time.perf_counter() - t0) / len(archs)
    mismatches = 0
    checked = archs[len(archs) - args.check:] if args.check else []
    for arch in checked:
        full = graph_features(build_model(arch, nc=80), setting.imgsz, setting.head)
        mismatches += abs(model.predict_ratio(full) - model.predict_ratio(cache.features(arch))) > 1e-9 * max(
            1.0, abs(model.predict_ratio(full)))
    name = Path(args.model).name if args.model else "unit weights"
    print(f"\n# {len(archs)} architectures drawn uniformly (seed {args.seed}) from {args.space}; "
          f"features at {setting.imgsz} px, head {setting.head}; model {name}")
    print(f"first pass: {pass1:.1f} s; {len(traced)} traced ({100 * len(traced) / len(archs):.0f}%), median "
          f"{1000 * statistics.median(traced) if traced else 0:.0f} ms each; {len(summed)} summed, median "
          f"{1000 * statistics.median(summed) if summed else 0:.2f} ms each")
    print(f"second pass (every layer cached), features + prediction: {1000 * warm:.3f} ms per architecture")
    print(f"layer parts cached: {len(cache)}; summed vs full trace on {len(checked)} architectures: "
          f"{mismatches} differ")
    print_machine()


if __name__ == "__main__":
    main()
