"""``python -m search.retrain``: train a chosen architecture from scratch on the full schedule.

    python -m search.retrain --storage sqlite:///studies/yolo26.db --study yolo26 --pick knee \\
        --data DATA.yaml --epochs 100 --out studies/ship/knee

Uses the same trainer as the search, re-measures latency, writes ``result.json`` (a
TrialResult) in ``--out`` and, when the architecture came from a study trial, records the
retrained mAP, epochs, data, path, teacher and initialisation as the study user attr
``retrained:<trial number>`` (Optuna does not allow changing a finished trial), next to the
trial's search-time mAP, and again as ``retrained:<n>:teacher`` or ``retrained:<n>:plain`` so
the model card can compare a run with a teacher and one without at the same epochs.
``--teacher PATH|baseline`` distills from a checkpoint (Ultralytics' ``distill_model``),
``--init-from PATH|baseline`` starts from its matching tensors (``trainers.train.inherit``).
stdout: the result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from search.engine.warm_start import resolve_baseline
from search.pick import PickError, add_pick_args, check_pick_args, pick
from search.run import checkpoint_arg
from search.ship.retrain import record_retrained, retrained_record
from trainers.cli import OneLineParser, device_arg, emit_json, fail, log, non_negative_float, positive_int
from trainers.train.teacher import BASELINE
from trainers.train.trial import check_checkpoints


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
    p.add_argument("--teacher", type=checkpoint_arg("--teacher"),
                   help="distill from this detection checkpoint, or 'baseline' (the study's trial 0)")
    p.add_argument("--distill-weight", type=non_negative_float("--distill-weight"), default=None,
                   help="distillation loss weight (default: the study's train.distill_weight, else 6.0)")
    p.add_argument("--init-from", type=checkpoint_arg("--init-from"),
                   help="start from this checkpoint's matching tensors, or 'baseline'")
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
    from trainers.train.results import TrialResult, TrialSettings
    from trainers.train.trial import run_trial

    recorded = chosen.config.trial if chosen.config is not None else TrialSettings(data="", out="")
    imgsz = args.imgsz or (recorded.imgsz if chosen.config is not None else 640)
    out = Path(args.out).resolve()
    settings = replace(recorded, data=str(Path(args.data).resolve()), out=str(out / "train"), epochs=args.epochs,
                       imgsz=imgsz, batch=args.batch, device=args.device, latency_cache=None, nc=None,
                       nan_at_batch=None, teacher=args.teacher, init_from=args.init_from,
                       distill_weight=recorded.distill_weight if args.distill_weight is None else args.distill_weight)
    # the study's head and latency setting, this run's data, schedule, teacher and initialisation
    try:
        settings = resolve_baseline(chosen.study, None, settings) if chosen.study is not None else settings
    except ValueError as e:
        fail(str(e))
    if BASELINE in (settings.teacher, settings.init_from):
        fail(f"'{BASELINE}' needs a study (--storage --study): --arch has no baseline trial")
    check_checkpoints(settings)
    result = run_trial(chosen.arch, settings)
    if isinstance(result, TrialResult):
        record = retrained_record(result, settings, out)
        if chosen.trial is not None and chosen.study is not None:
            record_retrained(chosen.study, chosen.trial.number, record)
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result.to_dict(), indent=1, default=str))
    emit_json(result.to_dict())
    return 0 if isinstance(result, TrialResult) else 1


if __name__ == "__main__":
    sys.exit(main())
