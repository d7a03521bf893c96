"""``python -m search.latency_model``: fit a latency cost model for a target, validate it on held-out architectures.

    python -m search.latency_model fit --space spaces/yolo26.yaml [--latency-backend torch] [--archs 150]
    python -m search.latency_model validate --space spaces/yolo26.yaml [--archs 100] [--twice 20]

``fit`` samples stock, the space's corners and random architectures, measures each fused at the space's
latency target interleaved with stock (ratios), fits a non-negative linear model over the fused graph's
operator features (:mod:`trainers.latency.predictor`) and saves it as
``<studies-dir>/latency_models/<target>.json``, where ``search.run --latency-source predicted`` finds it
(``--latency-model PATH`` names another file). ``validate`` measures architectures the fit never saw
(another seed), and ``--twice`` of them a second time for the noise floor; it writes
``<model>.validation.json``, ``.txt`` (the table) and ``.png`` (predicted vs measured) beside the model.
Both keep what they measured beside the model (:mod:`search.predict.samples`); ``--samples FILE`` fits or
validates on those measurements again without measuring (a new feature set or model form, same data).
Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from search.predict.store import model_path, validation_path
from trainers.cli import OneLineParser, fail, log, positive_int
from trainers.latency.setting import BACKEND_NAMES, LatencySetting


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m search.latency_model", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["fit", "validate"])
    p.add_argument("--space", required=True, help="the space file whose architectures and latency target are used")
    p.add_argument("--latency-backend", choices=list(BACKEND_NAMES), help="runtime (default: the space's)")
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), help="deployment size (default: the space's)")
    p.add_argument("--archs", type=positive_int("--archs", 1, 100000), help="architectures (fit 150, validate 100)")
    p.add_argument("--twice", type=positive_int("--twice", 0, 100000), default=20,
                   help="validate: architectures measured twice for the noise floor (default 20)")
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--rounds", type=positive_int("--rounds", 1, 1000), default=6, help="interleaved rounds")
    p.add_argument("--group", type=positive_int("--group", 1, 64), default=6, help="models per group, plus stock")
    p.add_argument("--studies-dir", default="studies")
    p.add_argument("--latency-model", help="the model file (default: found by its target in the studies folder)")
    p.add_argument("--samples", help="reuse the measurements of an earlier fit or validate (its <model>.fit_samples"
                                     ".json / .validation_samples.json) instead of measuring; features are recomputed")
    return p


def setting_of(args: Any) -> tuple[Any, LatencySetting]:
    """The space and the latency setting asked for (flags over the space's ``latency:``); exit 2 on bad input."""
    from search.space import SearchSpace, SpaceError

    try:
        space = SearchSpace.load(args.space)
    except SpaceError as e:
        fail(str(e))
    s = space.spec.latency
    setting = replace(s, backend=args.latency_backend or s.backend, imgsz=args.imgsz or s.imgsz)
    return space, setting


def _measured_or_reused(args: Any, archs: Any, setting: LatencySetting, conditions: Any,
                        twice: int) -> tuple[Any, tuple[float, ...]]:
    """``(Measured, second-pass ratios)``: measured now (``archs()`` picks them), or read from ``--samples`` (which
    must have been measured at ``conditions``)."""
    from search.predict.fit import Measured, Measurement, graphs_of, measure_ratios
    from search.predict.samples import load_samples

    how = Measurement(rounds=args.rounds, group=args.group)
    if args.samples:
        try:
            s = load_samples(args.samples, conditions)
        except ValueError as e:
            fail(str(e))
        log(f"{args.command}: {len(s.archs)} architectures measured earlier ({args.samples}), features recomputed")
        return Measured(s.archs, tuple(graphs_of(s.archs, setting, how.nc)), s.ratios, s.stock_ms), s.again
    chosen = archs()
    log(f"{args.command}: {len(chosen)} architectures at {setting.target}")
    first = measure_ratios(chosen, setting, how, log)
    again = measure_ratios(chosen[:twice], setting, how, log).ratios if twice else ()
    return first, again


def fit_command(args: Any, space: Any, setting: LatencySetting) -> int:
    """Sample (stock, corners, random draws), measure or reuse ``--samples``, fit, save; print the in-sample error."""
    from search.predict.fit import error_stats, sample_architectures
    from search.predict.samples import samples_path, save_samples
    from trainers.latency.predictor import TargetConditions, fit_cost_model

    t0, conditions = time.perf_counter(), TargetConditions.here(setting)
    measured, _ = _measured_or_reused(args, lambda: sample_architectures(space, args.archs or 150, args.seed),
                                      setting, conditions, 0)
    try:
        model = fit_cost_model(list(measured.graphs), list(measured.ratios), conditions,
                               measured.stock_ms, space=str(Path(args.space).resolve()))
    except ValueError as e:
        fail(str(e))
    predicted = [model.predict_ratio(g) for g in measured.graphs]
    stats = {"fit": dict(error_stats(predicted, list(measured.ratios))), "seconds": time.perf_counter() - t0,
             "hashes": [a.hash for a in measured.archs], "seed": args.seed, "rounds": args.rounds,
             "samples": args.samples}
    model = replace(model, stats=stats)
    path = model.save(Path(args.latency_model) if args.latency_model else model_path(args.studies_dir, setting))
    save_samples(samples_path(path, "fit"), measured, conditions)
    log(f"fit {model.model_id}: {len(model.features)} features, in-sample MAPE {stats['fit']['mape_pct']:.2f}% "
        f"in {stats['seconds']:.0f} s")
    print(path)
    return 0


def validate_command(args: Any, space: Any, setting: LatencySetting) -> int:
    """Measure held-out architectures, compare with the model's predictions and with a second measurement."""
    from search.predict.fit import error_stats, sample_architectures, scatter_png, stats_table
    from search.predict.samples import samples_path, save_samples
    from trainers.latency.predictor import CostModel, TargetConditions

    path = Path(args.latency_model) if args.latency_model else model_path(args.studies_dir, setting)
    conditions = TargetConditions.here(setting)
    try:
        model = CostModel.load(path)
        model.check_target(conditions)
    except ValueError as e:
        fail(str(e))
    t0 = time.perf_counter()
    fitted = frozenset(model.stats.get("hashes", ()))
    first, again = _measured_or_reused(args, lambda: sample_architectures(
        space, args.archs or 100, args.seed + 1000, exclude=fitted, with_corners=False), setting, conditions,
        args.twice)
    held_out = first.archs
    if seen := [a.hash for a in held_out if a.hash in fitted]:
        fail(f"--samples {args.samples}: {len(seen)} of its architectures are in the fit of model {model.model_id} "
             f"(e.g. {seen[0]}): not held out")
    predicted = [model.predict_ratio(g) for g in first.graphs]
    rows = {"predictor": dict(error_stats(predicted, list(first.ratios)))}
    if again:
        rows["noise floor"] = dict(error_stats(list(again), list(first.ratios[: len(again)])))
    table = stats_table(rows)
    out = validation_path(path)
    report = {"model": model.model_id, "target": setting.target, "rows": rows, "seconds": time.perf_counter() - t0,
              "pairs": [[a.hash, p, m] for a, p, m in zip(held_out, predicted, first.ratios)]}
    out.write_text(json.dumps(report, indent=1))
    save_samples(samples_path(path, "validation"), first, conditions, again)
    out.with_suffix(".txt").write_text(table + "\n")
    scatter_png(predicted, list(first.ratios), out.with_suffix(".png"), f"{setting.target} ({model.model_id})")
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    space, setting = setting_of(args)
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    try:
        from trainers.latency.backends import get_backend

        if (why := get_backend(setting.backend).unavailable(setting)) is not None:
            fail(f"--latency-backend {setting.backend}: cannot run here: {why}")
    except ValueError as e:
        fail(str(e))
    return fit_command(args, space, setting) if args.command == "fit" else validate_command(args, space, setting)


if __name__ == "__main__":
    sys.exit(main())
