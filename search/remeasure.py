"""``python -m search.remeasure``: measure a finished study's architectures for another latency target.

    python -m search.remeasure --storage sqlite:///studies/yolo26.db --study yolo26 --backend onnxruntime

Weights do not change latency, so each COMPLETE trial's architecture is built untrained (with
the study's class count) and timed for the target: ``--backend`` plus ``--device --dtype --imgsz
--threads --head``, each defaulting to the study's recorded latency setting (an INT8 study's ``int8``
does not carry over to ``--backend torch``, which has no INT8 path: it measures at ``auto``).
``--dtype int8`` (onnxruntime or openvino) quantizes each model post-training through Ultralytics'
exporter, as a search with an INT8 target does (:mod:`trainers.deploy.quantize`), calibrated on the
first ``--calib-images`` (default: the space's ``latency.calib_images``) images of the train split of
``--calib-data`` (default: the study's data YAML). ``--front-only``
measures only the architectures of the study's current Pareto front and the stock baseline.
Each figure is recorded with :func:`search.study.targets.write_target` as soon as it is taken, so an
interrupted run keeps what it measured and a second run measures only what is missing
(``--refresh`` measures everything again). An architecture that several trials share is
measured once and its figure recorded for each of them.

stderr: progress (``[k/N] trial 3 [hash]: 12.30 ms``). stdout: one line naming the target and
how many of the study's COMPLETE trials it holds. Bad input, an unknown study or a backend that
cannot run here (INT8 on torch, no calibration data, the quantizer package not installed): one line on
stderr, exit 2, before any model is built and before anything is written to the study. An architecture that
fails to build or run is logged and skipped: exit 1 at the end, a rerun retries it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search.pick import PickError, load_study
from search.study.config import RunConfig
from search.study.records import read_record
from trainers.cli import OneLineParser, device_arg, existing_file, fail, log, positive_int
from trainers.latency.report import LatencyReport
from trainers.latency.setting import BACKEND_NAMES, DTYPES, INT8_BACKENDS, LatencySetting
from trainers.model.heads import HEADS

DEFAULT_NC = 80  # Ultralytics' COCO class count: the fallback when a legacy study's data YAML is gone


@dataclass(frozen=True)
class Plan:
    """What a run does: architectures to measure (hash -> trial numbers) and figures copied from a same-hash trial."""

    measure: dict[str, list[int]]
    copy: dict[int, LatencyReport]
    selected: int  # trials this run covers (all COMPLETE trials, or the front's and the baseline's)


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m search.remeasure", description=__doc__)
    p.add_argument("--storage", required=True, help="Optuna storage URL of the search")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--backend", required=True, choices=list(BACKEND_NAMES), help="runtime that times the models")
    p.add_argument("--device", type=device_arg, help="device (default: the study's latency device)")
    p.add_argument("--threads", type=positive_int("--threads", 1, 1024), help="CPU threads (default: the study's)")
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096), help="image size (default: the study's)")
    p.add_argument("--dtype", choices=list(DTYPES), help="dtype (default: the study's); int8: post-training "
                   "quantized (onnxruntime or openvino)")
    p.add_argument("--calib-images", type=positive_int("--calib-images", 1, 100000),
                   help="int8: calibration images, the first of the train split (default: the space's)")
    p.add_argument("--calib-data", type=existing_file("--calib-data"),
                   help="int8: data YAML whose train split calibrates (default: the study's data)")
    p.add_argument("--head", choices=list(HEADS), help="head measured, with its post-processing (default: study's)")
    p.add_argument("--front-only", action="store_true", help="only the current Pareto front and the baseline")
    p.add_argument("--predict", action="store_true",
                   help="print the target's latency model's prediction beside each measured figure "
                        "(python -m search.latency_model; --latency-model names another file)")
    p.add_argument("--latency-model", help="the latency model file (default: <studies>/latency_models/<target>.json)")
    p.add_argument("--refresh", action="store_true", help="measure again trials the target already holds")
    p.add_argument("--repeats", type=positive_int("--repeats", 1, 100000), help="timed runs per model (at least)")
    return p


def setting_of(args: Any, config: RunConfig) -> LatencySetting:
    """The latency setting asked for: the flags given, the study's recorded setting for the others.

    The study's ``int8`` is not carried to a backend without INT8 (``auto`` instead). At ``int8`` the calibration
    set is ``--calib-images`` (else the space's ``latency.calib_images``) images of ``--calib-data``'s train split
    (else the study's data YAML).
    """
    t = config.trial.latency
    study_dtype = t.dtype if t.dtype != "int8" or args.backend in INT8_BACKENDS else "auto"
    dtype = args.dtype or study_dtype
    calib_data = getattr(args, "calib_data", None) or config.trial.data or None
    return replace(t, imgsz=args.imgsz or t.imgsz, device=args.device or t.device, dtype=dtype,
                   threads=args.threads or t.threads, backend=args.backend, head=args.head or t.head,
                   calib_images=getattr(args, "calib_images", None) or t.calib_images,
                   calib_data=str(Path(calib_data).resolve()) if dtype == "int8" and calib_data else t.calib_data)


def planned_target(setting: LatencySetting) -> str:
    """The target name the backend's reports will carry (device and dtype resolved on this machine)."""
    return setting.target


def class_count_of(config: RunConfig) -> tuple[int, str]:
    """The class count the study's models have, and where it came from."""
    from trainers.train.dataset import class_count

    if config.trial.nc is not None:
        return config.trial.nc, "recorded on the study"
    try:
        return class_count(config.trial.data), f"read from {config.trial.data}"
    except ValueError as e:
        return DEFAULT_NC, f"not recorded and {e}: assuming {DEFAULT_NC} (the class count changes the head's size)"


def selected_trials(study: Any, config: RunConfig, front_only: bool) -> list[Any]:
    """COMPLETE trials with an architecture; with ``front_only``, those of the front's and the baseline's hashes."""
    from optuna.trial import TrialState

    from search.pareto import baseline_trial, pareto_front

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if read_record(t, "architecture") is not None]
    if not front_only:
        return complete
    keep = [*pareto_front(study, config.objectives, config.constraints), baseline_trial(study)]
    hashes = {t.user_attrs.get("hash") for t in keep if t is not None}
    return [t for t in complete if t.user_attrs.get("hash") in hashes]


def plan(trials: Sequence[Any], held: dict[int, LatencyReport], refresh: bool) -> Plan:
    """Group the trials the target lacks by architecture; reuse a same-hash figure it already holds."""
    by_hash: dict[str, list[int]] = {}
    for t in trials:
        by_hash.setdefault(t.user_attrs["hash"], []).append(t.number)
    measure: dict[str, list[int]] = {}
    copy: dict[int, LatencyReport] = {}
    for arch_hash, numbers in by_hash.items():
        known = [held[n] for n in numbers if n in held]
        missing = [n for n in numbers if n not in held]
        if refresh or (missing and not known):
            measure[arch_hash] = numbers
        elif missing:
            copy.update({n: known[0] for n in missing})
    return Plan(measure, copy, len(trials))


def measure_plan(study: Any, trials: Sequence[Any], todo: Plan, setting: LatencySetting, nc: int,
                 repeats: int | None) -> tuple[set[str], list[str]]:
    """Build, time and record each architecture of ``todo`` in turn; ``(targets written, hashes that failed)``.

    An architecture whose build or measurement raises is logged and skipped; the others go on.
    """
    from search.study.targets import target_of, write_target
    from trainers.latency.measure import measure_latency
    from trainers.model.architecture import Architecture
    from trainers.model.build import build_model

    arch_of = {t.number: read_record(t, "architecture") for t in trials}
    written, failed = set(), []
    for k, (arch_hash, numbers) in enumerate(todo.measure.items(), 1):
        which = f"[{k}/{len(todo.measure)}] trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
        try:
            model = build_model(Architecture.from_dict(arch_of[numbers[0]]), nc=nc)
            report = measure_latency(model, setting, repeats=repeats)
        except Exception as e:  # one architecture that cannot be built or run must not stop the others
            log(f"{which} [{arch_hash}]: FAILED {type(e).__name__}: {' '.join(str(e).split())}"[:500])
            failed.append(arch_hash)
            continue
        target = target_of(report)
        write_target(study, target, {n: report for n in numbers})
        written.add(target)
        log(f"{which} [{arch_hash}]: {report.median_ms:.2f} ms (cv {100 * report.cv:.1f}%, n={report.n})")
    return written, failed


def held_figures(study: Any, target: str) -> dict[int, LatencyReport]:
    """The figures ``target`` holds already (none for a new target)."""
    from search.study.targets import read_target, targets

    return read_target(study, target) if target in targets(study) else {}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.imgsz is not None and args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32, got {args.imgsz}")
    try:
        study, config = load_study(args.storage, args.study)
    except PickError as e:
        fail(str(e))
    setting = setting_of(args, config)
    from trainers.latency.backends import get_backend

    if (why := get_backend(setting.backend).unavailable(setting)) is not None:
        fail(f"latency backend {setting.backend!r} cannot run here: {why}")
    if config.root:
        os.environ.setdefault("REPNAS_LOCK_DIR", str(Path(config.root) / ".locks"))  # the search's device lock
    from search.study.targets import write_target

    cost_model = load_cost_model(args, config, setting)
    target = planned_target(setting)
    trials = selected_trials(study, config, args.front_only)
    todo = plan(trials, held_figures(study, target), args.refresh)
    if todo.copy:
        write_target(study, target, todo.copy)
        log(f"trials {sorted(todo.copy)}: same architecture as a trial already measured, figure copied")
    nc, source = class_count_of(config)
    log_plan(target, todo, setting, f"nc {nc} ({source})")
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    written, failed = measure_plan(study, trials, todo, setting, nc, args.repeats)
    for other in sorted(written - {target}):
        log(f"warning: figures recorded under {other}, not the expected {target}")
    for name in sorted(written | {target}):
        held, complete = len(held_figures(study, name)), _count_complete(study)
        print(f"target {name}: holds {held} of {complete} COMPLETE trials")
    if args.predict:
        print(predicted_beside_measured(study, trials, target, setting, cost_model, nc))
    if failed:
        log(f"{len(failed)} architecture(s) could not be measured: {', '.join(failed)} (run again to retry)")
    return 1 if failed else 0


def log_plan(target: str, todo: Plan, setting: LatencySetting, classes: str) -> None:
    """Say on stderr what the run measures, for how many trials, with which class count and, at INT8, calibration."""
    log(f"target {target}: {len(todo.measure)} architecture(s) to measure for {todo.selected} trial(s), {classes}")
    if setting.dtype == "int8":
        log(f"int8: each model quantized post-training, calibrated on the first {setting.calib_images} images of "
            f"the train split of {setting.calib_data}")


def load_cost_model(args: Any, config: RunConfig, setting: LatencySetting) -> Any:
    """With ``--predict``: the target's cost model, checked against the target; exit 2 with one line if unusable."""
    if not args.predict:
        return None
    from search.predict.store import model_path
    from trainers.latency.predictor import CostModel, TargetConditions

    path = Path(args.latency_model) if args.latency_model else model_path(config.root or "studies", setting)
    try:
        model = CostModel.load(path)
        model.check_target(TargetConditions.here(setting))
    except ValueError as e:
        fail(f"--predict: {e}")
    return model


def predicted_beside_measured(study: Any, trials: Sequence[Any], target: str, setting: LatencySetting,
                              cost_model: Any, nc: int) -> str:
    """A table: each trial's measured figure on ``target`` and the cost model's prediction, in ms and as the
    error of the prediction (an architecture running an operator the model never saw says so)."""
    from trainers.latency.predictor import UnseenOperator, graph_from
    from trainers.model.architecture import Architecture
    from trainers.model.build import build_model

    figures = held_figures(study, target)
    lines = [f"{'trial':>5} {'hash':<12} {'measured ms':>11} {'predicted ms':>12} {'error':>7}"]
    for t in trials:
        arch = Architecture.from_dict(read_record(t, "architecture"))
        measured = figures.get(t.number)
        try:
            predicted = cost_model.predict_ms(graph_from(build_model(arch, nc=nc), setting))
        except UnseenOperator as e:
            lines.append(f"{t.number:>5} {arch.hash:<12} {'':>11} {'n/a':>12}  {e}")
            continue
        shown = f"{measured.median_ms:11.2f}" if measured else f"{'-':>11}"
        err = f"{100 * (predicted - measured.median_ms) / measured.median_ms:+6.1f}%" if measured else ""
        lines.append(f"{t.number:>5} {arch.hash:<12} {shown} {predicted:12.2f} {err:>7}")
    return f"latency model {cost_model.model_id} on {target}:\n" + "\n".join(lines)


def _count_complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


if __name__ == "__main__":
    sys.exit(main())
