"""One-shot scoring: each trial's architecture is a path of a trained supernet, scored in seconds.

:class:`OneShotObjective` implements the :class:`~search.engine.objective.Objective` protocol beside
:class:`~search.engine.per_trial.PerTrialObjective`. A trial samples the space's Optuna
distributions with every stage's widths and depths reduced to those the supernet holds (all the
space's, except where a stage's width is pinned: :func:`search.space.supernet.width_pinned`), so its
architecture is a path; :meth:`OneShotObjective.evaluate` extracts that path's
plain model (:func:`trainers.model.extract.extract`), measures params, GFLOPs and latency exactly
as per-trial mode does (:func:`search.engine.per_trial.record_pre_training`, same cache), prunes
it if it breaks a constraint known before scoring, recalibrates its BatchNorm statistics on a
fixed calibration set (:mod:`trainers.model.recalibrate`), and validates mAP50-95 on the val
split. Trial user attrs say ``source: supernet``; the record ``metrics`` holds the objective values.
The same architecture sampled twice reuses the earlier trial's result.

:func:`score_subnet` is the scoring step alone, with recalibration on or off (the ablation).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.engine.objective import Outcome
from search.engine.per_trial import (
    broken_constraints,
    earlier_trial,
    failed_outcome,
    over_budget,
    pruned_outcome,
    record_pre_training,
    reuse_result,
    sample_architecture,
    set_constraints,
)
from search.pareto.standalone import SUPERNET, is_estimate
from search.space import SearchSpace
from search.study.config import RunConfig
from search.study.records import write_record
from search.study.storage import worker_identity
from trainers.model.architecture import Architecture
from trainers.model.supernet_spec import SupernetSpec
from trainers.train.results import FailKind, PreTraining, TrialFailure

__all__ = ["OneShotObjective", "supernet_space", "load_supernet", "recalibration_ablation", "score_subnet",
           "supernet_of_study"]


def supernet_space(space: SearchSpace, spec: SupernetSpec) -> SearchSpace:
    """``space`` with each untied stage's widths and depths reduced to those the supernet's paths take."""
    from trainers.model.layout import stock_depth

    def held(name: str, st: Any) -> Any:
        s, stock = spec.stage(name), stock_depth(space.spec.scale, name)
        return replace(st, widths=tuple(w for w in st.widths if w in s.widths),
                       depths=tuple(d for d in st.depths if (None if d in (None, stock) else d) in s.depths))

    stages = tuple((n, st if st.tie is not None else held(n, st)) for n, st in space.spec.stages)
    return SearchSpace(replace(space.spec, stages=stages))


def supernet_of_study(cfg: RunConfig, spec: SupernetSpec) -> Path:
    """The study's supernet folder (``<study>/supernet``, trained or resumed there).

    ``ValueError`` (one line, saying which and what to do) when its checkpoint cannot be read, holds a supernet
    of another space or shape, or is missing while the study already holds architectures scored on it: a new
    supernet's estimates would not compare with theirs.
    """
    from trainers.train.supernet_trainer import supernet_spec_of

    folder = cfg.folder / "supernet"
    last = folder / "weights" / "last.pt"
    if last.is_file():
        try:
            saved = supernet_spec_of(last)
        except (ValueError, KeyError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise ValueError(f"{last}: not a readable supernet checkpoint ({e}); remove {folder} to train it "
                             "again") from None
        if saved != spec:
            raise ValueError(f"{last}: this study's supernet was trained for another space or shape than "
                             f"{cfg.space_file} (or before width and depth became elastic); give another --study, "
                             f"or remove {folder}")
    elif scored := _scored_on_supernet(cfg):
        raise ValueError(f"study {cfg.study!r} holds {scored} architecture(s) scored on its supernet, but its "
                         f"checkpoint {last} is missing: restore it, or give another --study (a new supernet's "
                         "estimates would not compare with theirs)")
    return folder


def _scored_on_supernet(cfg: RunConfig) -> int:
    """How many trials of the study (0 if it does not exist yet) hold a supernet estimate."""
    from search.study.storage import make_storage

    try:
        study = optuna.load_study(study_name=cfg.study, storage=make_storage(cfg.storage))
    except KeyError:  # no such study yet
        return 0
    return sum(1 for t in study.get_trials(deepcopy=False) if is_estimate(t))


def load_supernet(weights: str | Path) -> Any:
    """The supernet of an Ultralytics checkpoint (its EMA copy when present) in float32, eval mode."""
    from ultralytics.nn.tasks import torch_safe_load

    from trainers.model.supernet import SupernetModel

    ckpt, _ = torch_safe_load(str(weights))
    model = ckpt.get("ema") or ckpt["model"]
    if not isinstance(model, SupernetModel):
        raise ValueError(f"{weights}: not a supernet checkpoint (holds {type(model).__name__})")
    return model.float().eval()


def score_subnet(supernet: Any, arch: Architecture, cfg: RunConfig, images: Any | None) -> dict[str, float]:
    """mAP50-95 and mAP50 of ``arch``'s subnet on the val split; BatchNorm recalibrated on ``images`` unless ``None``.

    ``eval_seconds`` says how long extraction, recalibration and validation took. The supernet is not changed.
    """
    from trainers.model.extract import extract
    from trainers.model.recalibrate import recalibrate_bn
    from trainers.train.evaluate import evaluate

    t0 = time.time()
    model = extract(supernet, arch).float().eval()
    if images is not None:
        recalibrate_bn(model, images, cfg.trial.batch)
    t = cfg.trial
    scores = evaluate(model, t.data, t.imgsz, t.batch, _eval_device(t.device), head=t.head)
    return {**scores, "eval_seconds": round(time.time() - t0, 3)}


def _eval_device(device: str) -> str:
    return "cpu" if device == "auto" else device


class OneShotObjective:
    """Architectures scored on a trained supernet (``supernet_weights``): the one-shot search.

    ``calib_images``: calibration set size (0: no BatchNorm recalibration, the ablation's other arm).
    """

    def __init__(self, space: SearchSpace, cfg: RunConfig, supernet_weights: str | Path, spec: SupernetSpec,
                 calib_images: int = 64):
        self.space, self.cfg, self.spec = supernet_space(space, spec), cfg, spec
        self.weights, self.calib_images = str(supernet_weights), calib_images
        self._supernet: Any = None
        self._images: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_supernet": None, "_images": None}  # loaded again where it runs

    def supernet(self) -> Any:
        """The supernet, loaded once; ``ValueError`` if it is not the supernet of :attr:`spec`."""
        if self._supernet is None:
            supernet = load_supernet(self.weights)
            if supernet.spec != self.spec:
                raise ValueError(f"{self.weights}: this supernet was trained for another space or shape")
            self._supernet = supernet
        return self._supernet

    def images(self) -> Any | None:
        """The fixed calibration set (``None`` with ``calib_images`` 0), loaded once."""
        from trainers.model.recalibrate import calibration_images

        if self._images is None and self.calib_images > 0:
            self._images = calibration_images(self.cfg.trial.data, self.cfg.trial.imgsz, self.calib_images)
        return self._images

    def sample(self, trial: optuna.Trial) -> Architecture | Outcome:
        """The trial's architecture (a path of the supernet), recorded on it."""
        return sample_architecture(trial, self.space)

    def evaluate(self, study: optuna.Study, trial: optuna.Trial, prefix: str = "",
                 arch: Architecture | None = None) -> Outcome:
        """Measure, maybe prune, recalibrate and validate the trial's subnet; record it (``source: supernet``)."""
        from trainers.versions import versions

        for key, value in worker_identity().items():
            trial.set_user_attr(key, value)
        write_record(trial, "versions", versions())
        trial.set_user_attr("source", SUPERNET)
        if arch is None:
            sampled = self.sample(trial)
            if isinstance(sampled, Outcome):
                return sampled
            arch = sampled
        if (prev := earlier_trial(study, arch.hash, trial.number)) is not None:
            return reuse_result(trial, prev, self.cfg)
        try:
            self.spec.check(arch)
            pre = self._pre_scoring(trial, arch)
        except Exception as e:  # not a path, or cannot be built or run: a failure of the architecture
            return failed_outcome(trial, TrialFailure(FailKind.BUILD, f"{type(e).__name__}: {e}"[:500], arch.hash))
        cfg, metrics = self.cfg, pre.metrics
        if over := over_budget(cfg, pre):
            return pruned_outcome(trial, metrics, f"{over}: not scored")
        if broken := broken_constraints(cfg.constraints, metrics):
            return pruned_outcome(trial, metrics, f"breaks {', '.join(broken)}: not scored")
        return self._score(trial, arch, metrics)

    def _pre_scoring(self, trial: optuna.Trial, arch: Architecture) -> PreTraining:
        """Params, GFLOPs and latency of ``arch`` measured as per-trial mode does; recorded; constraints set."""
        from trainers.model.build import build_model
        from trainers.train.trial import measure_pre_training

        assert self.cfg.trial.nc is not None, "the run configuration's class count is resolved by search.run"
        pre = measure_pre_training(build_model(arch, nc=self.cfg.trial.nc), arch.hash, self.cfg.trial)
        record_pre_training(trial, pre)
        set_constraints(trial, self.cfg.constraints, pre.metrics)
        return pre

    def _score(self, trial: optuna.Trial, arch: Architecture, metrics: dict[str, float]) -> Outcome:
        try:
            scores = score_subnet(self.supernet(), arch, self.cfg, self.images())
        except Exception as e:
            return failed_outcome(trial, TrialFailure(FailKind.ERROR, f"{type(e).__name__}: {e}"[:500], arch.hash))
        scored = {"map50_95": scores["map50_95"], "map50": scores["map50"]}
        metrics.update(scored)
        set_constraints(trial, tuple(c for c in self.cfg.constraints if c.metric in scored), metrics)
        write_record(trial, "metrics", metrics)
        for key, value in {"map50_95": scores["map50_95"], "eval_seconds": scores["eval_seconds"],
                           "recalibrated": self.calib_images > 0, "supernet": self.weights}.items():
            trial.set_user_attr(key, value)
        values = [metrics[m] for m, _ in self.cfg.objectives]
        return Outcome(TrialState.COMPLETE, values, f"supernet mAP50-95 {scores['map50_95']:.3f}, latency "
                       f"{metrics['latency_ms']:.2f} ms, scored in {scores['eval_seconds']:.1f} s")


def recalibration_ablation(supernet: Any, arch: Architecture, cfg: RunConfig, calib_images: int) -> dict[str, Any]:
    """Score ``arch``'s subnet without and with BatchNorm recalibration on ``calib_images`` train images.

    Returns ``{"without": scores, "with": scores}`` (each :func:`score_subnet`'s dict): the ablation a
    bench aggregates over architectures.
    """
    from trainers.model.recalibrate import calibration_images

    images = calibration_images(cfg.trial.data, cfg.trial.imgsz, calib_images)
    return {"without": score_subnet(supernet, arch, cfg, None), "with": score_subnet(supernet, arch, cfg, images)}
