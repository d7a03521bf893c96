"""``python -m search.run --space spaces/yolo26.yaml``: the architecture search.

Samples architectures from the space, measures each one's fused latency before training,
trains and validates it in its own process, and records everything in an Optuna study
(SQLite by default; PostgreSQL with ``--storage``). Rerunning the same command resumes the
study and runs only the missing trials. Ends with the Pareto table and where its files are.

Successive halving (``--rungs 3,6 --eta 3``, or the space's ``train.rungs``/``train.eta``; ``--rungs ''``
turns it off) stops a training trial at a rung unless it ranks in the top 1/eta of the trials there
or no trial there dominates it (:mod:`search.engine.rungs`). ``--timeout SECONDS`` starts no new trial
after that many seconds; the running ones finish and the report follows.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from blocks.registry import DEFAULT_BACKBONE
from search.space import OneShotSettings, SearchSpace, SpaceError
from search.study.config import MODES, ONESHOT_FLAGS, RunConfig
from trainers.cli import OneLineParser, device_arg, fail, log, positive_float, positive_int, train_device_arg
from trainers.latency.setting import BACKEND_NAMES
from trainers.train.results import TrialSettings
from trainers.train.threads import AUTO, thread_count_arg


def rungs_arg(text: str) -> tuple[int, ...]:
    """argparse ``type=`` for ``--rungs``: comma-separated increasing epochs, ``''`` for none."""
    from search.engine.rungs import parse_rungs

    try:
        return parse_rungs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--rungs {e}") from None


def checkpoint_arg(flag: str) -> Callable[[str], str]:
    """argparse ``type=`` for ``--teacher``/``--init-from``: ``baseline``, or an existing file (made absolute)."""
    from trainers.train.teacher import BASELINE

    def parse(text: str) -> str:
        if text == BASELINE:
            return text
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"{flag} must be a checkpoint file or {BASELINE!r}, got {text!r}")
        return str(Path(text).resolve())

    return parse


def study_name(text: str) -> str:
    """argparse ``type=`` for a study name usable as a file name."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", text):
        raise argparse.ArgumentTypeError(f"--study must be letters, digits, '_', '.', '-' (1-100 chars), got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``search.run``."""
    p = OneLineParser(prog="python -m search.run", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="search-space YAML (see spaces/README.md)")
    p.add_argument("--data", help="Ultralytics data YAML (default: the space's, else the embedded synthetic set)")
    p.add_argument("--trials", type=positive_int("--trials", 1, 100000), default=20,
                   help="target number of finished trials in the study (default 20)")
    p.add_argument("--epochs", type=positive_int("--epochs", 1, 10000))
    p.add_argument("--imgsz", type=positive_int("--imgsz", 32, 4096))
    p.add_argument("--batch", type=positive_int("--batch", 1, 1024))
    p.add_argument("--device", type=device_arg, default="auto")
    p.add_argument("--study", type=study_name, help="study name (default: the space file's name)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--sampler", choices=["tpe", "nsga2", "random"],
                   help="Optuna sampler (default: tpe; nsga2 with --mode oneshot)")
    p.add_argument("--seed", type=positive_int("--seed", 0, 2**31 - 1), default=0)
    p.add_argument("--backend", choices=["optuna", "ray"], default="optuna")
    p.add_argument("--workers", type=positive_int("--workers", 1, 1024), default=1)
    p.add_argument("--ray-address", help="join an existing Ray cluster (e.g. auto or ray://host:10001)")
    p.add_argument("--latency-budget-ms", type=positive_float("--latency-budget-ms"))
    p.add_argument("--latency-backend", choices=list(BACKEND_NAMES),
                   help="runtime that times each candidate (default: the space's latency.backend, else torch)")
    p.add_argument("--latency-source", choices=list(LATENCY_SOURCES), default="auto",
                   help="measured: every candidate timed; predicted: the target's latency model "
                        "(python -m search.latency_model); predicted+confirm: predicted, then the front and stock "
                        "measured interleaved before the report; auto (default): predicted+confirm where this "
                        "target's model exists and its validation meets the goal, else measured")
    p.add_argument("--latency-model", help="the latency model file (default: studies/latency_models/<target>.json)")
    p.add_argument("--trial-timeout", type=positive_float("--trial-timeout"), help="seconds; a slower trial is FAIL")
    p.add_argument("--rungs", type=rungs_arg,
                   help="successive-halving rungs: epochs like 3,6 ('' turns it off; default: the space's train.rungs)")
    p.add_argument("--eta", type=positive_int("--eta", 2, 100),
                   help="at each rung the top 1/eta and the non-dominated go on "
                        "(default: the space's train.eta, else 3)")
    p.add_argument("--train-threads", type=thread_count_arg("--train-threads"), default=AUTO,
                   help="torch threads of each CPU trial's training: N, or auto (default): per epoch, "
                        "Ultralytics' cpu_count - 1 plus the core it leaves, while no other process uses it")
    p.add_argument("--epoch-budget", type=positive_int("--epoch-budget", 1, 10**7),
                   help="start no new trial once the study's trials have trained this many epochs in all")
    p.add_argument("--timeout", type=positive_float("--timeout"),
                   help="seconds; no new trial starts after it, running ones finish, then the report")
    p.add_argument("--teacher", type=checkpoint_arg("--teacher"),
                   help="distill every trial from this Ultralytics detection checkpoint, or 'baseline': the "
                        "study's own trained stock model (trial 0); weight: the space's train.distill_weight")
    p.add_argument("--init-from", type=checkpoint_arg("--init-from"),
                   help="start every trial from this checkpoint's tensors where layer and shape match, or "
                        "'baseline' (trial 0)")
    p.add_argument("--mode", choices=list(MODES), default="trial",
                   help="trial (default): train every architecture; oneshot: train one supernet, score "
                        "architectures on it (spaces/README.md, section oneshot)")
    p.add_argument("--supernet-epochs", type=positive_int("--supernet-epochs", 1, 10000),
                   help="oneshot: supernet training epochs (default: the space's oneshot.supernet_epochs)")
    p.add_argument("--subnets", type=positive_int("--subnets", 1, 100000),
                   help="oneshot: architectures scored on the supernet, the trials (default: oneshot.subnets)")
    p.add_argument("--calib-images", type=positive_int("--calib-images", 0, 100000),
                   help="oneshot: BatchNorm recalibration images per subnet, 0 for none "
                        "(default: oneshot.calib_images)")
    p.add_argument("--retrain-top", type=positive_int("--retrain-top", 0, 1000),
                   help="oneshot: front architectures retrained stand-alone after the search, with stock, on "
                        "the space's train schedule; 0: none (default: oneshot.retrain_top)")
    p.add_argument("--supernet-device", type=train_device_arg("--supernet-device"),
                   help="oneshot: where the supernet trains, e.g. 0,1 for DDP on two GPUs (default: --device); "
                        "subnets are scored on --device")
    p.add_argument("--include-presets", nargs="?", const="all", metavar="NAMES",
                   help="also evaluate the design references' fixed architectures of spaces/presets as trials "
                        "(all, or a comma-separated list of names; default: the space's presets)")
    p.add_argument("--studies-dir", default="studies", help=argparse.SUPPRESS)
    return p


LATENCY_SOURCES = ("auto", "measured", "predicted", "predicted+confirm")


def validate(argv: list[str] | None) -> tuple[RunConfig, SearchSpace]:
    """Parse and check everything that can be checked before torch is imported (exit 2 on bad input).

    Returns the run's configuration (``trial.data`` empty when the embedded dataset will be used,
    ``trial.nc`` not yet known: see :func:`resolve_data`) and the loaded space.
    """
    args = build_parser().parse_args(argv)
    try:
        space = SearchSpace.load(args.space)
    except SpaceError as e:
        fail(str(e))
    data = args.data or space.spec.train.data
    if data is not None:
        if not Path(data).is_file():
            fail(f"--data: no such file {data!r}")
        data = str(Path(data).resolve())
    if args.ray_address and args.backend != "ray":
        fail("--ray-address needs --backend ray")
    if args.storage is not None and not args.storage.startswith(("sqlite:///", "postgresql", "mysql")):
        fail(f"--storage must be an SQLAlchemy URL (sqlite:///..., postgresql://...), got {args.storage!r}")
    if args.imgsz is not None and args.imgsz % 32:
        fail(f"--imgsz must be a multiple of 32 (the model's largest stride), got {args.imgsz}")
    name = args.study or Path(args.space).stem
    if args.study is None:
        try:
            study_name(name)
        except argparse.ArgumentTypeError:
            fail(f"the space file name {name!r} is not a usable study name: give --study NAME")
    storage, root = _study_storage(args, name)
    if args.mode == "oneshot" and args.backend == "ray":
        fail("--mode oneshot does not support --backend ray yet: use --backend optuna")
    if args.mode == "oneshot" and space.spec.backbones != (DEFAULT_BACKBONE,):
        fail(f"{args.space}: backbone: --mode oneshot supports only [{DEFAULT_BACKBONE!r}] (the supernet has no RepViT "
             f"backbone), got {list(space.spec.backbones)}")
    if args.mode == "oneshot" and "baseline" in (args.teacher, args.init_from):
        fail("--teacher/--init-from baseline needs --mode trial: one-shot mode trains no stock trial to learn from")
    cfg = replace(_run_config(args, space, name, storage, root, data or ""), presets=_presets(args, space))
    if cfg.presets and args.mode == "oneshot":
        fail("--include-presets (or the space's presets) needs --mode trial: a preset is no path of the supernet; "
             "evaluate presets in a --mode trial run (they are trials beside its search)")
    if args.mode == "oneshot":
        one = oneshot_settings(args, space)
        _check_retrain_top(args, one)
        _check_supernet_device(one, cfg.trial.batch)
        cfg = replace(cfg, trials=one.subnets, sampler=args.sampler or "nsga2", mode="oneshot", oneshot=one)
    elif given := [flag for flag, name in ONESHOT_FLAGS if getattr(args, name) is not None]:
        fail(f"{given[0]} needs --mode oneshot")
    _check_rungs(cfg, "--rungs" if args.rungs is not None else f"{args.space}: train.rungs")
    if args.rungs is None and tuple(space.spec.train.rungs) != cfg.rungs:
        log(f"{args.space}: train.rungs {list(space.spec.train.rungs)} (for {space.spec.train.epochs} epochs) "
            f"at {cfg.trial.epochs} epochs: rungs at epochs {list(cfg.rungs)}")
    return cfg, space


def _presets(args: argparse.Namespace, space: SearchSpace) -> tuple[str, ...]:
    """The preset names to evaluate: ``--include-presets`` (``all`` or names) over the space's ``presets``."""
    from search.space.presets import presets_flag

    if args.include_presets is None:
        return space.spec.presets
    try:
        return presets_flag(args.include_presets)
    except SpaceError as e:
        fail(str(e))


def oneshot_settings(args: argparse.Namespace, space: SearchSpace) -> OneShotSettings:
    """The space's ``oneshot`` section with the ``--supernet-epochs``/``--subnets``/... flags over it."""
    one = space.spec.oneshot
    flags = {"supernet_epochs": args.supernet_epochs, "subnets": args.subnets, "calib_images": args.calib_images,
             "retrain_top": args.retrain_top, "supernet_device": args.supernet_device}
    return replace(one, **{k: v for k, v in flags.items() if v is not None})


def _check_retrain_top(args: argparse.Namespace, one: OneShotSettings) -> None:
    """Exit 2 with one line when more front architectures are to be retrained than the search can put there.

    The front besides stock holds at most ``subnets - 1`` architectures; that it holds fewer is known
    only at the end (then the ones it holds are retrained, :func:`search.engine.retrain_front.retrain_front`).
    """
    if one.retrain_top >= one.subnets:
        source = "--retrain-top" if args.retrain_top is not None else f"{args.space}: oneshot.retrain_top"
        fail(f"{source} {one.retrain_top} is larger than the front can be: {one.subnets} subnets put at most "
             f"{one.subnets - 1} architectures besides stock on it (--retrain-top 0 retrains none)")


def _check_supernet_device(one: OneShotSettings, batch: int) -> None:
    """Exit 2 with one line when ``--supernet-device`` names GPUs this machine lacks or splits the batch unevenly."""
    from trainers.train.devices import check_gpus

    try:
        check_gpus(one.supernet_device or "cpu", batch)
    except ValueError as e:
        fail(f"--supernet-device: {e}")


def _check_rungs(cfg: RunConfig, source: str) -> None:
    """Exit 2 with one line when a rung is not below the trial's epochs."""
    from search.engine.rungs import check_rungs

    try:
        check_rungs(cfg.rungs, cfg.trial.epochs)
    except ValueError as e:
        fail(f"{source}: {e} (--rungs '' turns successive halving off)")


def _run_config(args: argparse.Namespace, space: SearchSpace, name: str, storage: str, root: Path,
                data: str) -> RunConfig:
    """Flags over the space file's ``train``/``latency`` sections: the one typed configuration of the run.

    ``--rungs`` are epochs as given; the space's ``train.rungs`` follow the trial's epochs
    (:func:`search.engine.rungs.schedule_rungs`), so ``--epochs`` alone never makes them invalid.
    """
    from search.engine.rungs import schedule_rungs

    spec = space.spec
    epochs = args.epochs or spec.train.epochs
    rungs = schedule_rungs(spec.train.rungs, spec.train.epochs, epochs) if args.rungs is None else args.rungs
    device = args.device if args.device != "auto" else spec.latency.device
    trial = TrialSettings(
        data=data, out=str(root / name), epochs=epochs, imgsz=args.imgsz or spec.train.imgsz,
        batch=args.batch or spec.train.batch, device=device, head=spec.head, se_width_cost=spec.train.se_width_cost,
        latency=replace(spec.latency, device=device, backend=args.latency_backend or spec.latency.backend),
        latency_cache=str(root / "latency_cache.json"), seed=args.seed, teacher=args.teacher,
        latency_source=args.latency_source, latency_model=args.latency_model,
        distill_weight=spec.train.distill_weight, init_from=args.init_from, train_threads=args.train_threads)
    return RunConfig(study=name, storage=storage, root=str(root), space_file=str(Path(args.space).resolve()),
                     trial=trial, objectives=spec.objectives, constraints=spec.constraints, trials=args.trials,
                     sampler=args.sampler or "tpe", seed=args.seed, backend=args.backend, workers=args.workers,
                     ray_address=args.ray_address, latency_budget_ms=args.latency_budget_ms,
                     trial_timeout=args.trial_timeout, rungs=rungs,
                     eta=args.eta or spec.train.eta, rung_min_signal=spec.train.rung_min_signal,
                     timeout=args.timeout, epoch_budget=args.epoch_budget)


def resolve_data(cfg: RunConfig) -> RunConfig:
    """The configuration with its dataset known: ``--data``/the space's, else the embedded set (generated once)."""
    from trainers.train.dataset import class_count

    data = cfg.trial.data
    if not data:
        from trainers.train.data import ensure_synth

        data = str(Path(ensure_synth(Path(cfg.root) / "data" / "synth")).resolve())
    try:
        return cfg.with_trial(data=data, nc=class_count(data))
    except ValueError as e:
        fail(f"--data: {e}")


def check_latency_backend(cfg: RunConfig) -> None:
    """Exit 2 with one line when the run's latency backend cannot measure here (before anything trains)."""
    from trainers.latency.backends import get_backend

    setting = cfg.trial.latency
    if (why := get_backend(setting.backend).unavailable(setting)) is not None:
        fail(f"--latency-backend {setting.backend}: cannot run here: {why}")


def _study_storage(args: argparse.Namespace, name: str) -> tuple[str, Path]:
    """The storage URL and the absolute studies folder, or exit 2 naming the flag whose path cannot be used."""
    from search.study.storage import absolute_sqlite_url, default_storage_url

    flag = "--studies-dir"
    try:  # a parent that is a file, no permission, a NUL byte: one line, not a traceback
        root = Path(args.studies_dir).resolve()
        if args.storage:
            flag = "--storage"
            url = absolute_sqlite_url(args.storage)
            if url.startswith("sqlite:///") and ":memory:" not in url:  # an absolute path's folder too
                Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            return url, root
        return default_storage_url(name, root), root
    except (OSError, ValueError) as e:
        fail(f"{flag}: cannot create the study's folder: {e}")


def run_oneshot(cfg: RunConfig, space: SearchSpace) -> int:
    """Train (or resume) the study's supernet, score ``cfg.oneshot.subnets`` architectures on it, report; then
    retrain stock and ``retrain_top`` front architectures stand-alone and report on their stand-alone mAP."""
    import functools

    from search.engine.oneshot import OneShotObjective, supernet_of_study
    from search.engine.optuna_driver import run_search
    from search.space.supernet import sample_path, supernet_spec, width_pinned
    from trainers.train.devices import train_device
    from trainers.train.supernet_trainer import SupernetSettings, train_supernet

    spec, t, one = supernet_spec(space.spec), cfg.trial, cfg.oneshot
    assert one is not None, "validate() resolves the oneshot settings of --mode oneshot"
    try:
        folder = supernet_of_study(cfg, spec)
    except ValueError as e:
        fail(str(e))
    bounds = [c.value for c in cfg.constraints if c.metric == "params_m" and c.op == "<="]
    max_params = int(min(bounds) * 1e6) if bounds else None
    settings = SupernetSettings(data=t.data, out=str(folder), epochs=one.supernet_epochs, imgsz=t.imgsz,
                                batch=t.batch, device=train_device(one.supernet_device or t.device), seed=cfg.seed,
                                head=t.head, max_params=max_params)
    stages = dict(space.spec.stages)
    pinned = {n: r for n, r in width_pinned(space.spec).items() if len(stages[n].widths) > 1}
    why = "; ".join(f"{', '.join(n for n in pinned if pinned[n] == r)}: {r}" for r in dict.fromkeys(pinned.values()))
    shape = "elastic in width and depth" if any(s.elastic for _, s in spec.stages) else "one width and depth per stage"
    log(f"supernet: {spec.paths()} paths, {shape}{f' (width pinned at {why})' if pinned else ''}, "
        f"{one.supernet_epochs} epochs at {t.imgsz} px (SPOS, one path per batch of {t.batch}"
        f"{f'; paths over params_m <= {min(bounds):g} drawn again' if bounds else ''}) in {folder}")
    t0 = time.time()
    weights = train_supernet(spec, settings, functools.partial(sample_path, spec))
    calib = f"BatchNorm recalibrated on {one.calib_images} images" if one.calib_images else "no recalibration"
    log(f"supernet ready in {time.time() - t0:.0f} s: {weights}; scoring {one.subnets} architectures on it ({calib})")
    code = run_search(cfg, OneShotObjective(space, cfg, weights, spec, one.calib_images))
    if code != 0 or not one.retrain_top:
        print("mAP50-95 above is the supernet's estimate (recalibrated BN; trial user attr source: supernet)"
              + ("; --retrain-top 0: no architecture retrained stand-alone" if code == 0 else ""))
        return code
    from search.engine.retrain_front import retrain_and_report

    log(f"retraining stock and {one.retrain_top} architecture(s) of the supernet front stand-alone "
        f"({t.epochs} epochs at {t.imgsz} px, the per-trial schedule)")
    return retrain_and_report(cfg, one.retrain_top)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    cfg, space = validate(argv)
    cfg = resolve_data(cfg)
    from trainers.train.teacher import BASELINE
    from trainers.train.trial import check_checkpoints

    check_checkpoints(replace(cfg.trial, teacher=None if cfg.trial.teacher == BASELINE else cfg.trial.teacher,
                              init_from=None if cfg.trial.init_from == BASELINE else cfg.trial.init_from))
    from trainers.cli import quiet_ultralytics

    quiet_ultralytics()
    check_latency_backend(cfg)
    from search.predict.source import resolve_latency_model

    cfg = resolve_latency_model(cfg)
    from search.engine.optuna_driver import run_search
    from search.engine.per_trial import PerTrialObjective

    try:
        if cfg.mode == "oneshot":
            return run_oneshot(cfg, space)
        return run_search(cfg, PerTrialObjective(space, cfg))
    except KeyboardInterrupt:
        log("interrupted: finished trials are in the study; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
