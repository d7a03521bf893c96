"""Latency targets: re-measure a study for another runtime, its fronts side by side, pick and export on a target."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from search_helpers import TinyRun, cli, complete, copy_of, load

from search.pareto import baseline_trial, pareto_front
from search.remeasure import class_count_of, setting_of
from search.remeasure import main as remeasure_main
from search.study.config import RunConfig
from search.study.records import record_attrs
from search.study.targets import read_target, targets
from trainers.model.architecture import Architecture
from trainers.train.results import TrialSettings

ORT = "onnxruntime"
LEGACY_DB = Path(__file__).resolve().parent / "data" / "legacy_study.db"


def target_line(stdout: str) -> str:
    m = re.fullmatch(r"target (\S+): holds (\d+) of (\d+) COMPLETE trials\n", stdout)
    assert m, stdout
    return m.group(1)


# --- a real tiny study -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_run: TinyRun) -> Path:
    return copy_of(tiny_run, tmp_path_factory.mktemp("remeasure"))


def storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'studies' / 'tiny.db'}"


@pytest.fixture(scope="module")
def ort_target(tiny: Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "tiny", "--backend", ORT, "--repeats", "3",
            cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not the expected" not in r.stderr  # the target name planned before measuring is the one measured
    return target_line(r.stdout), r


@pytest.mark.slow
def test_remeasure_records_every_complete_trial_once_per_architecture(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, r = ort_target
    study = load(tiny, "tiny")
    assert target in targets(study) and target.startswith("onnxruntime/cpu-") and target.endswith("/64/t1/nms_free")
    figures = read_target(study, target)
    trials = complete(study)
    assert sorted(figures) == sorted(t.number for t in trials)
    assert all(f.backend == ORT and f.imgsz == 64 and f.head == "nms_free" and f.median_ms > 0
               for f in figures.values())
    hashes = {t.user_attrs["hash"] for t in trials}
    progress = [line for line in r.stderr.splitlines() if re.match(r"\[\d+/\d+\] trials? ", line)]
    assert len(progress) == len(hashes), r.stderr  # one measurement per architecture
    for t in trials:  # trials of one architecture share its one figure
        same = [figures[o.number] for o in trials if o.user_attrs["hash"] == t.user_attrs["hash"]]
        assert all(f == same[0] for f in same)
        assert f"[{t.user_attrs['hash']}]" in r.stderr
    assert f"holds {len(trials)} of {len(trials)} COMPLETE trials" in r.stdout


@pytest.mark.slow
def test_second_run_measures_nothing(tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, _ = ort_target
    before = read_target(load(tiny, "tiny"), target)
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "tiny", "--backend", ORT, "--repeats", "3",
            cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert target_line(r.stdout) == target
    assert "0 architecture(s) to measure" in r.stderr and not re.search(r"^\[\d+/", r.stderr, re.M)
    assert read_target(load(tiny, "tiny"), target) == before  # same reports, measured_at and samples included


@pytest.fixture(scope="module")
def front_only_target(tiny: Path) -> str:
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "tiny", "--backend", "torch", "--imgsz", "32",
            "--threads", "1", "--front-only", "--repeats", "3", cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not the expected" not in r.stderr
    return target_line(r.stdout)


@pytest.mark.slow
def test_front_only_holds_the_front_and_the_baseline(tiny: Path, front_only_target: str) -> None:
    target = front_only_target
    assert target.startswith("torch/") and "/32/t1/" in target
    study = load(tiny, "tiny")
    config = RunConfig.from_study(study)
    keep = [*pareto_front(study, config.objectives, config.constraints), baseline_trial(study)]
    hashes = {t.user_attrs["hash"] for t in keep if t is not None}
    held = set(read_target(study, target))
    assert held == {t.number for t in complete(study) if t.user_attrs["hash"] in hashes}
    baseline = baseline_trial(study)
    assert baseline is not None and baseline.number in held


@pytest.mark.slow
def test_pareto_prints_each_target_front_and_the_side_by_side_table(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]], front_only_target: str) -> None:
    target, other = ort_target[0], front_only_target
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "tiny", "--list", cwd=tiny)
    listed = dict(line.split("\t") for line in r.stdout.splitlines())  # the search's own interleaved target too
    assert r.returncode == 0 and listed[target] == "3 trials" and listed[other].endswith(" trials")
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "tiny", "--target", target, "--target", other,
            cwd=tiny)
    assert r.returncode == 0, r.stderr
    assert f"Pareto front on target {target}" in r.stdout and f"Pareto front on target {other}" in r.stdout
    side = r.stdout[r.stdout.index("Side by side"):].splitlines()
    assert side[1] == f"[1] {target}" and side[2] == f"[2] {other}"
    assert side[3].split() == ["trial", "hash", "mAP50-95", "[1]", "ms", "[2]", "ms", "blocks"]
    rows = side[5:]
    assert rows and all(len(row.split()) == 6 for row in rows)  # trial, hash, mAP, one latency per target, blocks
    assert any(row.split()[3].endswith("*") for row in rows) and any(row.split()[4].endswith("*") for row in rows)


@pytest.mark.slow
def test_unknown_target_and_unavailable_backend_are_one_line_exit_2(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, _ = ort_target
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "tiny", "--target", "tpu/x/float32/64/t1/nms",
            cwd=tiny)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and target in r.stderr and not r.stdout
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "tiny", "--backend", ORT, "--dtype", "float16",
            cwd=tiny)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot run here" in r.stderr and not r.stdout


@pytest.mark.slow
def test_export_on_a_target_records_it_in_the_model_card(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, _ = ort_target
    out = tiny / "ship"
    r = cli("search.export", "--storage", storage(tiny), "--study", "tiny", "--pick", "fastest", "--target", target,
            "--out", str(out), cwd=tiny)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: an export check failed; the card is written either way
    card = json.loads((out / "model_card.json").read_text())
    figures = read_target(load(tiny, "tiny"), target)
    chosen = int(card["chosen"].split()[1])
    assert card["target"]["name"] == target and card["target"]["latency"] == figures[chosen].to_dict()
    assert f"of target {target}" in card["chosen"] and f"--target {target}" in card["commands"][-1]


# --- in process: bad input, a legacy study ---------------------------------------------------------------------------

def test_unknown_study_missing_storage_and_unavailable_backend_build_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr("trainers.model.build.build_model", no_build)
    db = tmp_path / "s.db"
    shutil.copy(LEGACY_DB, db)
    cases = [(["--storage", f"sqlite:///{db}", "--study", "nope", "--backend", ORT], "'nope'"),
             (["--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x", "--backend", ORT], "no such SQLite"),
             (["--storage", f"sqlite:///{db}", "--study", "legacy", "--backend", ORT, "--dtype", "float16"],
              "cannot run here"),
             (["--storage", f"sqlite:///{db}", "--study", "legacy", "--backend", ORT, "--imgsz", "100"], "multiple")]
    for argv, words in cases:
        with pytest.raises(SystemExit) as e:
            remeasure_main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "none.db").exists()
    assert targets(optuna.load_study(study_name="legacy", storage=f"sqlite:///{db}")) == []


def test_legacy_study_without_class_count_is_measured_with_80(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    db = tmp_path / "legacy.db"
    shutil.copy(LEGACY_DB, db)
    legacy = optuna.load_study(study_name="legacy", storage=f"sqlite:///{db}")
    legacy.set_user_attr("train", {**legacy.user_attrs["train"], "data": str(tmp_path / "gone" / "coco8.yaml")})
    assert remeasure_main(["--storage", f"sqlite:///{db}", "--study", "legacy", "--backend", ORT, "--front-only",
                           "--repeats", "2"]) == 0
    out, err = capsys.readouterr()
    assert "nc 80 (not recorded and data YAML" in err and "assuming 80" in err
    study = optuna.load_study(study_name="legacy", storage=f"sqlite:///{db}")
    figures = read_target(study, target_line(out))
    baseline = baseline_trial(study)
    assert baseline is not None and baseline.number in figures


def test_class_count_is_recorded_else_read_from_the_data_yaml_else_80(tmp_path: Path) -> None:
    config = RunConfig("s", "", "", "", TrialSettings(data=str(tmp_path / "d.yaml"), out="", nc=5))
    assert class_count_of(config) == (5, "recorded on the study")
    (tmp_path / "d.yaml").write_text("names: [a, b, c]\n")
    assert class_count_of(config.with_trial(nc=None)) == (3, f"read from {tmp_path / 'd.yaml'}")
    nc, why = class_count_of(config.with_trial(nc=None, data=str(tmp_path / "gone.yaml")))
    assert nc == 80 and "does not exist" in why and "assuming 80" in why


# --- INT8: a study's front re-measured quantized ---------------------------------------------------------------------

def int8_study(tmp_path: Path, data: str, dtype: str = "auto") -> tuple[str, optuna.Study]:
    """Trials (mAP, ms) a (0.5, 10) the stock baseline and b (0.4, 20), both the stock architecture; the space's
    latency: 64 px, ``latency.calib_images`` 3; the study trained on ``data``."""
    from trainers.latency.setting import LatencySetting

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=url, directions=["maximize", "minimize"])
    latency = LatencySetting(imgsz=64, device="cpu", dtype=dtype, backend="openvino" if dtype == "int8" else "torch",
                             calib_images=3)
    RunConfig("q", url, str(tmp_path), "", TrialSettings(data=data, out=str(tmp_path / "q"), nc=3,
                                                         latency=latency)).record_on(study)
    arch = Architecture.baseline().to_dict()
    for h, m, lat in (("a", 0.5, 10.0), ("b", 0.4, 20.0)):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[m, lat], user_attrs={"hash": h, "blocks": h, "is_baseline": h == "a"},
            system_attrs=record_attrs({"architecture": arch, "metrics": {"map50_95": m, "latency_ms": lat}})))
    return url, study


def test_remeasure_at_int8_quantizes_on_the_spaces_calibration_set(
        tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from trainers.deploy import quantize

    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    url, study = int8_study(tmp_path, str(data))
    calibrated: list[tuple[str, int]] = []
    real = quantize.calibration_data
    monkeypatch.setattr(quantize, "calibration_data",
                        lambda yaml, count, folder: calibrated.append((str(yaml), count)) or real(yaml, count, folder))
    assert remeasure_main(["--storage", url, "--study", "q", "--backend", ORT, "--dtype", "int8", "--front-only",
                           "--repeats", "2"]) == 0
    out, err = capsys.readouterr()
    target = target_line(out)
    assert target.startswith("onnxruntime/cpu-") and target.endswith("/int8/64/t1/nms_free")
    figures = read_target(optuna.load_study(study_name="q", storage=url), target)
    assert set(figures) == {0} and figures[0].dtype == "int8" and figures[0].backend == ORT  # the front: a
    assert calibrated == [(str(data.resolve()), 3)]  # the study's data, the space's latency.calib_images
    assert f"calibrated on the first 3 images of the train split of {data.resolve()}" in err


def test_remeasure_int8_refusals_are_one_line_exit_2_and_write_nothing(
        tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr("trainers.model.build.build_model", no_build)
    url, _ = int8_study(tmp_path, str(data))
    (tmp_path / "gone").mkdir()
    gone_url, _ = int8_study(tmp_path / "gone", str(tmp_path / "moved" / "data.yaml"))
    cases = [(url, ["--backend", "torch", "--dtype", "int8"], "torch backend has no INT8 path"),
             (gone_url, ["--backend", ORT, "--dtype", "int8"], "calibration data YAML"),
             (url, ["--backend", "openvino", "--dtype", "int8"], "which is not installed (pip install nncf)")]
    for storage_url, argv, words in cases:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "nncf", None)  # `import nncf` raises ImportError: the quantizer is missing
            with pytest.raises(SystemExit) as e:
                remeasure_main(["--storage", storage_url, "--study", "q", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and words in err, err
    for storage_url in (url, gone_url):
        assert targets(optuna.load_study(study_name="q", storage=storage_url)) == []


def test_an_int8_studys_dtype_is_not_carried_to_torch(tmp_path: Path, data: Path) -> None:
    _, study = int8_study(tmp_path, str(data), dtype="int8")
    config = RunConfig.from_study(study)
    asked = argparse.Namespace(imgsz=None, device=None, dtype=None, threads=None, head=None)
    assert setting_of(argparse.Namespace(**vars(asked), backend="torch"), config).dtype == "auto"
    on_ort = setting_of(argparse.Namespace(**vars(asked), backend=ORT), config)
    assert (on_ort.dtype, on_ort.calib_images, on_ort.calib_data) == ("int8", 3, str(data))
