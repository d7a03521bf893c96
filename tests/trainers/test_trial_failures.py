"""A trial that fails says why (build, data, NaN), and the ``python -m trainers.train.trial`` command line.

Failing trials get a stand-in latency so nothing is measured first.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from torch import nn
from trial_helpers import DUMMY_LATENCY, IMGSZ, REP_ARCH, Trained, run_module

from trainers.model.architecture import Architecture, StageChoice
from trainers.train.results import PreTraining, TrialFailure, TrialSettings
from trainers.train.trial import run_trial

pytestmark = pytest.mark.usefixtures("locks_in_tmp")


# --------------------------------------------------------------------------- failures


def _failure(trial: Trained) -> TrialFailure:
    assert isinstance(trial.result, TrialFailure), trial.result
    assert trial.result.arch_hash == trial.arch.hash
    assert trial.result.to_dict()["ok"] is False
    assert TrialFailure.from_dict(json.loads(json.dumps(trial.result.to_dict()))) == trial.result
    return trial.result


def _fail_fast(tmp_path: Path, arch: Architecture, data: Path, **kw: Any) -> Trained:
    """A trial expected to fail, with a stand-in latency so nothing is measured first."""
    cwd, out = tmp_path / "cwd", tmp_path / "out" / "trial"
    cwd.mkdir()
    settings = TrialSettings(**{"data": str(data), "out": str(out), "epochs": 1, "imgsz": IMGSZ, "batch": 4,
                                "device": "cpu", **kw})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        t0 = time.time()
        result = run_trial(arch, settings, PreTraining(0, 0.0, DUMMY_LATENCY))
    return Trained(arch, result, out, cwd, time.time() - t0)


def test_missing_data_yaml_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_data.yaml"
    failure = _failure(_fail_fast(tmp_path, Architecture.baseline(), missing))
    assert failure.kind == "error"
    assert "no_such_data.yaml" in failure.reason and "does not exist" in failure.reason


def test_data_yaml_with_missing_images_is_an_error_naming_them(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: images/train\nval: images/nowhere\nnames: {0: thing}\n")
    failure = _failure(_fail_fast(tmp_path, Architecture.baseline(), broken))
    assert failure.kind == "error"
    assert "nowhere" in failure.reason


def test_injected_nan_fails_at_its_first_batch(tmp_path: Path, coco8_copy: Path) -> None:
    """Two batches an epoch, three epochs: the NaN at batch 1 ends the trial inside epoch 1, with no retry."""
    trial = _fail_fast(tmp_path, Architecture.baseline(), coco8_copy, epochs=3, batch=2, nan_at_batch=1)
    failure = _failure(trial)
    assert failure.kind == "nan"
    assert "non-finite" in failure.reason and "epoch 1, batch 1" in failure.reason
    # no epoch finished: Ultralytics writes results.csv and last.pt at each epoch's end
    assert not (trial.out / "results.csv").exists()
    assert not (trial.out / "weights" / "last.pt").exists()


def test_invalid_architecture_is_a_build_failure(tmp_path: Path, coco8_copy: Path) -> None:
    arch = Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=(4,))})  # even kernel
    trial = _fail_fast(tmp_path, arch, coco8_copy)
    failure = _failure(trial)
    assert failure.kind == "build"
    assert failure.reason.startswith("ValueError") and "got 4" in failure.reason
    assert not trial.out.exists()  # nothing trained


def test_any_build_exception_is_a_build_failure(tmp_path: Path, coco8_copy: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import trainers.model.build

    def broken_build(*args: object, **kwargs: object) -> nn.Module:
        raise RuntimeError("stage p3_backbone: channels do not match")

    monkeypatch.setattr(trainers.model.build, "build_model", broken_build)
    failure = _failure(_fail_fast(tmp_path, REP_ARCH, coco8_copy))
    assert failure.kind == "build"
    assert failure.reason == "RuntimeError: stage p3_backbone: channels do not match"


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_module("trainers.train.trial", *args, cwd=cwd, timeout=timeout)


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    """One architecture JSON line, as ``search.space sample`` writes it."""
    path = tmp_path / "arch.json"
    path.write_text(Architecture.baseline().to_json() + "\n")
    return path


def test_cli_failure_prints_one_json_line_and_exits_1(tmp_path: Path, coco8_copy: Path, arch_file: Path) -> None:
    out = tmp_path / "trial"
    proc = _cli("--arch", str(arch_file), "--data", str(coco8_copy), "--epochs", "2", "--imgsz", "64",
                "--batch", "2", "--device", "cpu", "--out", str(out), "--latency-imgsz", "64",
                "--latency-device", "cpu", "--nan-at-batch", "1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # Ultralytics' log went to stderr
    data = json.loads(lines[0])
    assert data["ok"] is False and data["kind"] == "nan" and "non-finite" in data["reason"]
    assert data["arch_hash"] == Architecture.baseline().hash
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("change", "message"), [
    (("--arch", "missing.json"), "no such file 'missing.json'"),
    (("--epochs", "-1"), "--epochs must be an integer in [1, 10000], got -1"),
    (("--imgsz", "big"), "--imgsz must be an integer"),
    (("--device", "gpu0"), "--device must be"),
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, coco8_copy: Path, arch_file: Path,
                                               change: tuple[str, str], message: str) -> None:
    args = {"--arch": str(arch_file), "--data": str(coco8_copy), "--epochs": "1", "--imgsz": "64"}
    args[change[0]] = change[1]
    t0 = time.time()
    proc = _cli(*[x for kv in args.items() for x in kv], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.time() - t0 < 20  # rejected before torch and Ultralytics are imported


def test_cli_unreadable_architecture_exits_2(tmp_path: Path, coco8_copy: Path) -> None:
    bad = tmp_path / "arch.json"
    bad.write_text("{not json\n")
    proc = _cli("--arch", str(bad), "--data", str(coco8_copy), "--epochs", "1", "--imgsz", "64", cwd=tmp_path,
                timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: --arch {bad}: not a JSON architecture line (JSONDecodeError)"]
