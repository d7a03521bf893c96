"""``python -m search.space check|sample|baseline PATH``: validate and sample search spaces.

stdout carries JSON lines only; the summary and progress go to stderr. Bad input: one line
on stderr, exit code 2, no traceback. Arguments and the space file are checked before torch
and Ultralytics are imported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from search.space import SearchSpace, SpaceError
from trainers.cli import OneLineParser, emit_json, fail, log, positive_int


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m search.space", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    check = sub.add_parser("check", help="validate a space file")
    check.add_argument("path")
    sample = sub.add_parser("sample", help="print N sampled architectures as JSON lines")
    sample.add_argument("path")
    sample.add_argument("--n", type=positive_int("--n", 1, 10000), default=1)
    sample.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    sample.add_argument("--nc", type=positive_int("--nc", 1, 10000), default=80)
    sample.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=640)
    base = sub.add_parser("baseline", help="print the all-C3k2 architecture as a JSON line")
    base.add_argument("path")
    base.add_argument("--nc", type=positive_int("--nc", 1, 10000), default=80)
    base.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=640)
    return p


def architecture_line(arch: Any, nc: int, imgsz: int) -> dict[str, Any]:
    """The JSON line of an architecture: choices, hash, params and GFLOPs (at ``imgsz``)."""
    from trainers.deploy.inference import count_params, gflops
    from trainers.model.build import build_model

    model = build_model(arch, nc=nc)
    return {"hash": arch.hash, "params": count_params(model), "gflops": round(gflops(model, imgsz), 4),
            **arch.to_dict()}


def sample_architectures(space: SearchSpace, n: int, seed: int) -> list[Any]:
    """``n`` architectures drawn by Optuna's random sampler with ``seed`` (same seed, same list)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        space = SearchSpace.load(args.path)
    except SpaceError as e:
        fail(str(e))
    if args.command == "check":
        log(f"{args.path}: ok: {len(space.spec.stages)} stages, {space.dimensions()} dimensions, "
            f"{space.size()} architectures")
        emit_json({"path": args.path, "valid": True, "stages": len(space.spec.stages),
                   "dimensions": space.dimensions(), "size": space.size()})
        return 0
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    archs = [space.baseline()] if args.command == "baseline" else sample_architectures(space, args.n, args.seed)
    for arch in archs:
        emit_json(architecture_line(arch, args.nc, args.imgsz))
    return 0


if __name__ == "__main__":
    sys.exit(main())
