"""The trial contract: one job file in, one result line out; one build per process, nothing measured twice."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from trial_helpers import DUMMY_LATENCY, IMGSZ, REP_ARCH, run_module

from trainers.model.architecture import Architecture
from trainers.train.results import JOB_VERSION, PreTraining, TrialJob, TrialResult, TrialSettings
from trainers.train.trial import run_trial

FAKE = PreTraining(params=12345, gflops=6.5, latency=replace(DUMMY_LATENCY, median_ms=3.21), latency_cached=True)


def _settings(tmp_path: Path, data: Path | str = "d.yaml", **kw: Any) -> TrialSettings:
    base = {"data": str(data), "out": str(tmp_path / "out"), "epochs": 1, "imgsz": IMGSZ, "batch": 4,
            "device": "cpu", "latency_imgsz": IMGSZ, "latency_device": "cpu", "latency_dtype": "float32", "nc": 80}
    return TrialSettings.from_dict({**base, **kw})


def test_job_file_round_trips_with_architecture_beside_it(tmp_path: Path) -> None:
    job = TrialJob(REP_ARCH, _settings(tmp_path, seed=3, latency_cache=str(tmp_path / "c.json")), FAKE)
    path = job.write(tmp_path / "trial")
    assert path.name == "trial.json"
    assert Architecture.from_json((tmp_path / "trial" / "architecture.json").read_text()) == REP_ARCH
    assert TrialJob.read(path) == job
    data = json.loads(path.read_text())
    assert data["version"] == JOB_VERSION and data["settings"]["latency_dtype"] == "float32"  # nothing left out
    assert TrialJob.read(TrialJob(REP_ARCH, job.settings).write(tmp_path / "bare")).pre_training is None


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(version=99), "version must be 1, got 99"),
    (lambda d: d["settings"].update(latency_dtpye="auto"), "unknown key 'latency_dtpye'"),
    (lambda d: d.pop("settings"), "missing key 'settings'"),
    (lambda d: d["architecture"].update(hash="0" * 12), "hash does not match"),
])
def test_bad_job_files_are_refused_naming_the_problem(tmp_path: Path, edit: Any, message: str) -> None:
    path = TrialJob(REP_ARCH, _settings(tmp_path), FAKE).write(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        TrialJob.read(path)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("trainers.train.trial", *args, cwd=cwd, timeout=60)


def test_cli_job_takes_no_other_flag_and_checks_the_file(tmp_path: Path) -> None:
    path = TrialJob(REP_ARCH, _settings(tmp_path), FAKE).write(tmp_path)
    extra = _cli("--job", str(path), "--epochs", "3", cwd=tmp_path)
    assert extra.returncode == 2 and extra.stderr == "error: --job takes no other flag, got --epochs\n"
    path.write_text("{broken")
    broken = _cli("--job", str(path), cwd=tmp_path)
    assert broken.returncode == 2 and broken.stderr.splitlines() == [
        f"error: --job {path}: not a JSON trial job (JSONDecodeError)"]
    neither = _cli("--data", str(path), cwd=tmp_path)
    assert neither.returncode == 2 and "--arch (or --job FILE)" in neither.stderr and "Traceback" not in neither.stderr


@pytest.mark.slow
def test_child_builds_once_and_keeps_the_handed_in_figures(tmp_path: Path, coco8_copy: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the parent's figures in the job, the trial builds one model, trains it and measures nothing."""
    import trainers.latency.measure
    import trainers.model.build
    from trainers.train.dataset import class_count

    builds: list[str] = []
    real_build = trainers.model.build.build_model

    def counting_build(arch: Architecture, *args: Any, **kwargs: Any) -> Any:
        builds.append(arch.hash)
        return real_build(arch, *args, **kwargs)

    def no_measuring(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the trial measured latency although the job carried it")

    monkeypatch.setattr(trainers.model.build, "build_model", counting_build)
    monkeypatch.setattr(trainers.latency.measure, "measure_latency", no_measuring)
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)
    settings = _settings(tmp_path, coco8_copy, nc=class_count(coco8_copy))
    result = run_trial(REP_ARCH, settings, FAKE)
    assert isinstance(result, TrialResult), result
    assert builds == [REP_ARCH.hash]  # the trainer trained the model built for the trial, not a second one
    assert (result.params, result.gflops, result.latency) == (FAKE.params, FAKE.gflops, FAKE.latency)
    assert 0.0 <= result.map50_95 <= 1.0 and len(result.epoch_map) == 1


@pytest.mark.parametrize(("head", "nms"), [("nms_free", False), ("nms", None)])
def test_the_pinned_head_reaches_validation_and_latency(tmp_path: Path, head: str, nms: bool | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics validates the head the trial pins (nms=False: one-to-one), and its latency is of that head."""
    from trainers.model.build import build_model
    from trainers.train.trial import measure_pre_training, trial_overrides

    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    settings = _settings(tmp_path, head=head)
    assert trial_overrides(REP_ARCH, settings, tmp_path / "out", "cpu")["nms"] is nms
    pre = measure_pre_training(build_model(REP_ARCH, nc=80), REP_ARCH.hash, settings)
    assert pre.latency.head == head and pre.latency.backend == "torch"
    assert pre.latency.post.startswith("one-to-many head + NMS" if head == "nms" else "one-to-one head, top-300")
