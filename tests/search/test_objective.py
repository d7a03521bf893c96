"""One search trial on the parent's side: one build, one measurement, one job handed to the trial process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from search.engine.per_trial import run_objective
from search.run import validate
from search.space import SearchSpace
from search.study.config import RunConfig
from search.study.records import read_record
from trainers.model.architecture import Architecture
from trainers.train.results import TrialJob, TrialResult

SPACE = """
stages:
  p3_backbone: {block: RepViT, kernels: [[3, 5]]}
constraints: ['params_m <= 4']
latency: {imgsz: 64, device: cpu, dtype: float32}
train: {epochs: 2, imgsz: 64, batch: 2}
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RunConfig, SearchSpace, dict[str, list[Any]]]:
    """A run configuration over a one-architecture space, with builds, measurements and jobs counted."""
    import search.engine.runner
    import trainers.latency.measure
    import trainers.model.build

    (tmp_path / "space.yaml").write_text(SPACE)
    cfg, space = validate(["--space", str(tmp_path / "space.yaml"), "--studies-dir", str(tmp_path / "st")])
    cfg = cfg.with_trial(data=str(tmp_path / "data.yaml"), nc=5)
    seen: dict[str, list[Any]] = {"builds": [], "measures": [], "jobs": []}
    real_build, real_measure = trainers.model.build.build_model, trainers.latency.measure.measure_latency

    def build(arch: Architecture, *a: Any, **kw: Any) -> Any:
        seen["builds"].append(arch.hash)
        return real_build(arch, *a, **kw)

    def measure(*a: Any, **kw: Any) -> Any:
        seen["measures"].append(kw)
        return real_measure(*a, **{**kw, "repeats": 2, "warmup": 1, "min_seconds": 0.0})

    def trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None) -> TrialResult:
        seen["jobs"].append(job)
        assert job.pre_training is not None
        pre = job.pre_training
        return TrialResult(job.architecture.hash, job.architecture.to_dict(), 0.25, 0.5, pre.params, pre.gflops,
                           pre.latency, 1.0, "best.pt", "cpu", job.settings.epochs, (0.2, 0.25))

    monkeypatch.setattr(trainers.model.build, "build_model", build)
    monkeypatch.setattr(trainers.latency.measure, "measure_latency", measure)
    monkeypatch.setattr(search.engine.runner, "run_trial_process", trial_process)
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    return cfg, space, seen


def _one_trial(cfg: RunConfig, space: SearchSpace, name: str) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(study_name=name, storage=cfg.storage, directions=["maximize", "minimize"])
    trial = study.ask()
    outcome = run_objective(study, trial, space, cfg)
    study.tell(trial, outcome.values)
    return study.trials[-1]


def test_one_build_one_measurement_one_job(run: tuple[RunConfig, SearchSpace, dict[str, list[Any]]]) -> None:
    cfg, space, seen = run
    done = _one_trial(cfg, space, "a")
    arch = space.suggest(done)  # the space has one architecture
    assert seen["builds"] == [arch.hash] and len(seen["measures"]) == 1
    (job,) = seen["jobs"]
    assert job.settings == cfg.trial.from_dict({**cfg.trial.to_dict(), "out": job.settings.out})  # as resolved
    assert job.settings.latency.dtype == "float32" and job.settings.nc == 5  # nothing dropped on the way
    assert Path(job.settings.out) == cfg.folder / f"trial_0000_{arch.hash}"
    pre = job.pre_training
    assert pre is not None and not pre.latency_cached
    assert done.user_attrs["params"] == pre.params and done.user_attrs["gflops"] == pre.gflops
    assert read_record(done, "latency")["median_ms"] == pre.latency.median_ms == done.values[1]
    assert done.user_attrs["latency"] == pre.latency.one_line()  # the short line people scan
    assert read_record(done, "metrics")["params_m"] == pre.params / 1e6
    assert done.values[0] == 0.25 and read_record(done, "epoch_map") == [0.2, 0.25]
    assert read_record(done, "architecture") == arch.to_dict() and done.user_attrs["hash"] == arch.hash


def test_a_cached_latency_is_not_measured_again(run: tuple[RunConfig, SearchSpace, dict[str, list[Any]]]) -> None:
    cfg, space, seen = run
    first = _one_trial(cfg, space, "a")
    second = _one_trial(cfg, space, "b")  # another study: the same architecture is trained again, not re-measured
    assert len(seen["builds"]) == 2 and len(seen["measures"]) == 1 and len(seen["jobs"]) == 2
    assert seen["jobs"][1].pre_training.latency_cached
    assert read_record(second, "latency")["cached"] and second.values[1] == first.values[1]
