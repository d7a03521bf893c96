"""``python -m search.run`` end to end on tiny studies: real SQLite files, real training, real Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from optuna.trial import TrialState
from search_helpers import FIXED_SPACE, TINY_SPACE, TinyRun, load, run_search, trial_dirs
from ultralytics.utils import NUM_THREADS

from search.study.records import is_record, read_record
from trainers.latency.report import LatencyReport
from trainers.train.threads import usable_cores


@pytest.mark.slow
def test_tiny_study_records_values_names_attrs_and_resumes(tiny_run: TinyRun) -> None:
    tmp_path, r = tiny_run.root, tiny_run.result
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "tiny")
    assert study.metric_names == ["map50_95", "latency_ms"]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    first = study.trials[0]
    assert first.user_attrs["baseline"] is True
    assert set(read_record(first, "architecture")["stages"]["p3_backbone"]) == {"block", "downsample"}
    for t in study.trials:
        if t.state != TrialState.COMPLETE:
            continue
        assert len(t.values) == 2 and 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0
        for key in ("hash", "blocks", "params", "gflops", "latency", "device", "weights"):  # short, for people
            assert key in t.user_attrs and not is_record(t.user_attrs[key]), key
        for key in ("architecture", "latency", "metrics", "epoch_map", "versions"):  # records, for programs
            assert read_record(t, key) is not None, key
        latency = read_record(t, "latency")
        assert latency["imgsz"] == 64 and latency["median_ms"] == pytest.approx(t.values[1])
        assert t.user_attrs["latency"] == LatencyReport.from_dict(latency).one_line()
        assert len(read_record(t, "epoch_map")) == 1
    assert "Pareto front" in r.stdout and "Hypervolume" in r.stdout
    assert (tmp_path / "studies" / "tiny" / "pareto.json").is_file()
    assert not (tmp_path / "runs").exists()
    trained = trial_dirs(tmp_path, "tiny")
    from trainers.train.results import TrialJob

    by_number = {t.number: t for t in study.trials}
    for folder in trained:  # the job each trial process read: the parent's figures, not measured again
        job = TrialJob.read(folder / "trial.json")
        trial = by_number[int(folder.name.split("_")[1])]
        assert job.architecture.hash == trial.user_attrs["hash"] and job.settings.head == "nms_free"
        assert job.pre_training is not None and job.pre_training.params == trial.user_attrs["params"]
        assert job.pre_training.latency.median_ms == read_record(trial, "latency")["median_ms"]
        assert job.settings.train_threads == "auto"  # Ultralytics' count, plus its spare core while idle
        if trial.state == TrialState.COMPLETE:
            counts = trial.user_attrs["epoch_threads"]
            assert len(counts) == job.settings.epochs
            assert set(counts) <= {NUM_THREADS, min(len(usable_cores()), NUM_THREADS + 1)}
    assert study.user_attrs["run_config"]["trial"]["head"] == "nms_free"

    again = run_search(tmp_path, TINY_SPACE, *tiny_run.args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 of 3 trials finished" in again.stderr
    assert len(load(tmp_path, "tiny").trials) == len(study.trials)
    assert trial_dirs(tmp_path, "tiny") == trained


@pytest.mark.slow
def test_same_architecture_is_reused_not_retrained(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, FIXED_SPACE, "--data", str(data), "--trials", "2", "--study", "fixed")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "fixed")
    t0, t1 = study.trials[:2]
    assert t1.user_attrs["reused_from"] == t0.number and t1.values == t0.values
    assert len(trial_dirs(tmp_path, "fixed")) == 1


@pytest.mark.slow
def test_latency_budget_prunes_before_training(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, TINY_SPACE, "--data", str(data), "--trials", "2", "--study", "budget",
                   "--latency-budget-ms", "0.001")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "budget")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in study.trials:
        assert "budget" in t.user_attrs["prune_reason"] and read_record(t, "metrics")["latency_ms"] > 0.001
    assert trial_dirs(tmp_path, "budget") == []


@pytest.mark.slow
def test_ray_backend_writes_into_the_same_storage(tmp_path: Path, data: Path) -> None:
    pytest.importorskip("ray")
    r = run_search(tmp_path, TINY_SPACE, "--data", str(data), "--trials", "2", "--study", "ray", "--backend", "ray",
                   "--workers", "2", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "ray")
    assert study.metric_names == ["map50_95", "latency_ms"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert any(t.user_attrs.get("baseline") for t in complete)
    assert all(read_record(t, "latency") and read_record(t, "architecture") for t in complete)
    assert study.user_attrs["run_config"]["trial"]["train_threads"] == "auto"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--trials", "0"], "--trials"),
        (["--trials", "many"], "--trials"),
        (["--sampler", "cmaes"], "--sampler"),
        (["--backend", "dask"], "--backend"),
        (["--data", "/nonexistent/data.yaml"], "--data"),
        (["--latency-budget-ms", "-3"], "--latency-budget-ms"),
        (["--study", "../escape"], "--study"),
        (["--storage", "redis://x"], "--storage"),
        (["--ray-address", "auto"], "--ray-address"),
        (["--device", "gpu7"], "--device"),
        (["--train-threads", "0"], "--train-threads"),
    ],
)
def test_bad_cli_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    r = run_search(tmp_path, TINY_SPACE, *args, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_space_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = run_search(tmp_path, "stages: {p3_backbone: {block: [Nope]}}", timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "stages.p3_backbone.block[0]" in r.stderr


@pytest.mark.parametrize(("space", "needle"), [
    ("head_stem: [stock, rep]\nstages: {p3_backbone: {block: RepBlock}}",
     "head_stem[1]: must be one of ['stock', 'repconv'], got 'rep'"),
    ("head_stem: repconv\nhead_stem_layers: 3\nstages: {p3_backbone: {block: RepBlock}}",
     "head_stem_layers[0]: must be one of [1, 2], got 3"),
], ids=["stem", "layers"])
def test_bad_head_stem_is_one_line_and_exit_2(tmp_path: Path, space: str, needle: str) -> None:
    r = run_search(tmp_path, space, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(needle), lines


def test_a_latency_backend_that_cannot_run_stops_before_training(tmp_path: Path, data: Path) -> None:
    space = FIXED_SPACE.replace("device: cpu}", "device: cpu, dtype: float16}")
    r = run_search(tmp_path, space, "--data", str(data), "--trials", "1", "--latency-backend", "onnxruntime")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["error: --latency-backend onnxruntime: cannot run here: the onnxruntime backend "
                                     "measures the float32 or int8 export, got dtype 'float16'"]
    assert not (tmp_path / "studies" / "space.db").exists() and not trial_dirs(tmp_path, "space")


INT8_SPACE = """
stages:
  p3_backbone: {block: C3k2}
latency: {imgsz: 64, device: cpu, backend: openvino, dtype: int8, calib_images: 2}
objectives: {map50_95_int8: maximize, latency_ms: minimize}
constraints: ["int8_drop <= 100"]
train: {epochs: 1, imgsz: 64, batch: 4}
"""
QUANTIZER_NOISE = ("nncf", "Statistics collection", "Fast Bias", "\u2501", "WARNING:root:")


@pytest.mark.slow
def test_an_int8_search_records_int8_map_and_drop_and_reports_them(tmp_path: Path, data: Path) -> None:
    pytest.importorskip("nncf")
    r = run_search(tmp_path, INT8_SPACE, "--data", str(data), "--trials", "2", "--study", "q8")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "q8")
    assert study.metric_names == ["map50_95_int8", "latency_ms"]
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 2 and trials[1].user_attrs["reused_from"] == 0  # one architecture: trained once
    for t in trials:
        int8, metrics = read_record(t, "int8"), read_record(t, "metrics")
        assert int8["backend"] == "openvino" and "+nncf-" in int8["quantizer"] and int8["calib_images"] == 2
        assert 0 < int8["seconds"] < 600  # what the INT8 target added to the trial
        assert metrics["map50_95_int8"] == int8["map50_95_int8"] == t.user_attrs["map50_95_int8"] == t.values[0]
        assert metrics["int8_drop"] == t.user_attrs["int8_drop"] == round(
            100 * (int8["map50_95_float"] - int8["map50_95_int8"]), 4)
        assert read_record(t, "latency")["dtype"] == "int8" and "int8" in t.user_attrs["latency"]
    text = (tmp_path / "studies" / "q8" / "pareto.txt").read_text()
    assert "INT8:        post-training quantized by ultralytics-" in text and "/int8/64/t1/" in text
    assert "INT8 drop pt" in text and "INT8 drop pt" in r.stdout
    row = json.loads((tmp_path / "studies" / "q8" / "pareto.json").read_text())["front"][0]
    assert (row["map50_95_int8"], row["int8_drop"]) == (metrics["map50_95_int8"], metrics["int8_drop"])
    noise = [line for line in (r.stdout + r.stderr).splitlines() if any(n in line for n in QUANTIZER_NOISE)]
    assert noise == []  # NNCF's lines are in the trial's exporter.log instead
    assert "INFO:nncf:" in (trial_dirs(tmp_path, "q8")[0] / "int8" / "exporter.log").read_text()
