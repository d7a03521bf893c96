"""``python -m search.retrain``: train a chosen architecture from scratch on the full schedule.

    python -m search.retrain --storage sqlite:///studies/yolo26.db --study yolo26 --pick knee \\
        --data DATA.yaml --epochs 100 --out studies/ship/knee

Uses the same trainer as the search, re-measures latency, writes ``result.json`` (a
TrialResult) in ``--out`` and, when the architecture came from a study trial, records the
retrained mAP, epochs, data and path as the study user attr ``retrained:<trial number>``
(Optuna does not allow changing a finished trial), next to the trial's search-time mAP.
stdout: the result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from search.pick import PickError, add_pick_args, check_pick_args, pick
from trainers.cli import OneLineParser, device_arg, emit_json, fail, log, positive_int


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when the training failed)."""
    p = OneLineParser(prog="python -m search.retrain", description=__doc__)
    add_pick_args(p)
    p.add_argument("--data", required=True, help="Ultralytics data YAML")
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 100000), required=True)
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), default=None)
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024), default=16)
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    if (problem := check_pick_args(args)) is not None:
        fail(problem)
    if not Path(args.data).is_file():
        fail(f"--data: no such file {args.data!r}")
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    try:
        chosen = pick(args)
    except (PickError, ValueError) as e:
        fail(str(e))
    log(f"retraining {chosen.arch.hash} ({chosen.rule}): {chosen.arch.blocks_summary()}")
    from trainers.results import TrialResult, TrialSettings
    from trainers.trial import run_trial

    recorded = chosen.config.trial if chosen.config is not None else TrialSettings(data="", out="")
    imgsz = args.imgsz or (recorded.imgsz if chosen.config is not None else 640)
    out = Path(args.out).resolve()
    settings = replace(recorded, data=str(Path(args.data).resolve()), out=str(out / "train"), epochs=args.epochs,
                       imgsz=imgsz, batch=args.batch, device=args.device, latency_cache=None, nc=None,
                       nan_at_batch=None)  # the study's head and latency setting, this run's data and schedule
    result = run_trial(chosen.arch, settings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    if isinstance(result, TrialResult) and chosen.trial is not None and chosen.study is not None:
        # Optuna refuses to update a finished trial, so the record sits on the study, keyed by the trial
        chosen.study.set_user_attr(f"retrained:{chosen.trial.number}", {
            "map50_95": result.map50_95, "map50": result.map50, "epochs": result.epochs, "data": settings.data,
            "imgsz": imgsz, "path": result.weights, "result": str(out / "result.json")})
    emit_json(result.to_dict())
    return 0 if isinstance(result, TrialResult) else 1


if __name__ == "__main__":
    sys.exit(main())
