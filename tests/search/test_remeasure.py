"""Latency targets: re-measure a study for another runtime, its fronts side by side, pick and export on a target."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from search_helpers import TINY_SPACE, load, run_search

from search.pareto import baseline_trial, pareto_front
from search.pareto.__main__ import main as pareto_main
from search.pick import PickError, check_pick_args, pick
from search.remeasure import class_count_of, measure_plan, plan, setting_of
from search.remeasure import main as remeasure_main
from search.study.config import RunConfig
from search.study.records import record_attrs
from search.study.targets import read_target, target_of, targets, write_target
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture
from trainers.train.results import TrialSettings

ORT = "onnxruntime"
LEGACY_DB = Path(__file__).resolve().parent / "data" / "legacy_study.db"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "YOLO_OFFLINE": "1"})


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def target_line(stdout: str) -> str:
    m = re.fullmatch(r"target (\S+): holds (\d+) of (\d+) COMPLETE trials\n", stdout)
    assert m, stdout
    return m.group(1)


# --- a real tiny study -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    tmp = tmp_path_factory.mktemp("remeasure")
    r = run_search(tmp, TINY_SPACE, "--data", str(data), "--trials", "3", "--study", "rm", "--seed", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp


def storage(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'studies' / 'rm.db'}"


@pytest.fixture(scope="module")
def ort_target(tiny: Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "rm", "--backend", ORT, "--repeats", "3",
            cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not the expected" not in r.stderr  # the target name planned before measuring is the one measured
    return target_line(r.stdout), r


@pytest.mark.slow
def test_remeasure_records_every_complete_trial_once_per_architecture(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, r = ort_target
    study = load(tiny, "rm")
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
    before = read_target(load(tiny, "rm"), target)
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "rm", "--backend", ORT, "--repeats", "3",
            cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert target_line(r.stdout) == target
    assert "0 architecture(s) to measure" in r.stderr and not re.search(r"^\[\d+/", r.stderr, re.M)
    assert read_target(load(tiny, "rm"), target) == before  # same reports, measured_at and samples included


@pytest.fixture(scope="module")
def front_only_target(tiny: Path) -> str:
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "rm", "--backend", "torch", "--imgsz", "32",
            "--threads", "1", "--front-only", "--repeats", "3", cwd=tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not the expected" not in r.stderr
    return target_line(r.stdout)


@pytest.mark.slow
def test_front_only_holds_the_front_and_the_baseline(tiny: Path, front_only_target: str) -> None:
    target = front_only_target
    assert target.startswith("torch/") and "/32/t1/" in target
    study = load(tiny, "rm")
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
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "rm", "--list", cwd=tiny)
    listed = dict(line.split("\t") for line in r.stdout.splitlines())  # the search's own interleaved target too
    assert r.returncode == 0 and listed[target] == "3 trials" and listed[other].endswith(" trials")
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "rm", "--target", target, "--target", other,
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
    r = cli("search.pareto", "--storage", storage(tiny), "--study", "rm", "--target", "tpu/x/float32/64/t1/nms",
            cwd=tiny)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and target in r.stderr and not r.stdout
    r = cli("search.remeasure", "--storage", storage(tiny), "--study", "rm", "--backend", ORT, "--dtype", "float16",
            cwd=tiny)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot run here" in r.stderr and not r.stdout


@pytest.mark.slow
def test_export_on_a_target_records_it_in_the_model_card(
        tiny: Path, ort_target: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    target, _ = ort_target
    out = tiny / "ship"
    r = cli("search.export", "--storage", storage(tiny), "--study", "rm", "--pick", "fastest", "--target", target,
            "--out", str(out), cwd=tiny)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: an export check failed; the card is written either way
    card = json.loads((out / "model_card.json").read_text())
    figures = read_target(load(tiny, "rm"), target)
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


# --- a hand-made study: pick and the fronts on a target --------------------------------------------------------------

def report(ms: float, backend: str = ORT) -> LatencyReport:
    return LatencyReport(ms, ms, ms, 0.01, 10, "session", "cpu (x86_64, 2 cores)", "float32", 1, 64, 1, "2", True,
                         backend, head="nms_free")


@pytest.fixture()
def hand(tmp_path: Path) -> tuple[str, optuna.Study]:
    """Trials (mAP, own ms): a (0.5, 10) the stock baseline, b (0.4, 20), c (0.3, 30); the own front is {a}."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    study = optuna.create_study(study_name="hand", storage=url, directions=["maximize", "minimize"])
    RunConfig("hand", url, str(tmp_path), "", TrialSettings(data="", out=str(tmp_path / "hand"))).record_on(study)
    arch = Architecture.baseline().to_dict()
    for h, m, lat in (("a", 0.5, 10.0), ("b", 0.4, 20.0), ("c", 0.3, 30.0)):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[m, lat], user_attrs={"hash": h, "blocks": h, "is_baseline": h == "a"},
            system_attrs=record_attrs({"architecture": arch,
                                       "metrics": {"map50_95": m, "latency_ms": lat, "params_m": 2.0}})))
    return url, study


def pick_args(url: str, rule: str | None, target: str | None, trial: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(storage=url, study="hand", trial=trial, pick=rule, arch=None, target=target)


def picked(url: str, rule: str, target: str | None) -> int:
    chosen = pick(pick_args(url, rule, target))
    assert chosen.trial is not None
    return int(chosen.trial.number)


def test_pick_on_a_target_chooses_on_that_targets_figures(hand: tuple[str, optuna.Study]) -> None:
    url, study = hand
    fast_b = target_of(report(1.0))
    write_target(study, fast_b, {0: report(30.0), 1: report(5.0), 2: report(40.0)})  # b now the fastest, c dominated
    assert picked(url, "fastest", None) == 0
    chosen = pick(pick_args(url, "fastest", fast_b))
    assert chosen.trial is not None and chosen.trial.number == 1
    assert chosen.target == fast_b and chosen.target_latency == report(5.0)
    assert f"of target {fast_b}" in chosen.rule and "2 front points" in chosen.rule
    assert picked(url, "most-accurate", fast_b) == 0


def test_a_partial_target_fronts_only_the_trials_it_holds(hand: tuple[str, optuna.Study],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    url, study = hand
    partial = target_of(report(1.0, backend="openvino"))
    write_target(study, partial, {1: report(50.0, "openvino"), 2: report(60.0, "openvino")})
    # on the study's own figures a (10 ms, mAP 0.5) would dominate both; it was never measured on this target
    assert picked(url, "fastest", partial) == 1
    with pytest.raises(PickError, match="holds no figure"):
        pick(pick_args(url, None, partial, trial=0))
    with pytest.raises(PickError, match=r"measured targets \['openvino/.*'\], got 'nope'"):
        pick(pick_args(url, "knee", "nope"))
    bad = pick_args(url, None, partial)
    bad.arch, bad.storage = "arch.json", None
    assert check_pick_args(bad) is not None
    assert pareto_main(["--storage", url, "--study", "hand", "--target", partial]) == 0
    out = capsys.readouterr().out
    assert "2 trials measured" in out and "    1 b " in out and "    0 a " not in out


def test_side_by_side_marks_where_each_architecture_wins(hand: tuple[str, optuna.Study],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, study = hand
    t1, t2 = target_of(report(1.0)), target_of(report(1.0, "openvino"))
    write_target(study, t1, {0: report(30.0), 1: report(5.0), 2: report(40.0)})  # front {a, b}
    write_target(study, t2, {0: report(3.0, "openvino"), 1: report(4.0, "openvino"), 2: report(5.0, "openvino")})
    assert pareto_main(["--storage", url, "--study", "hand", "--target", t1, "--target", t2]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split()[3:5] for line in out[out.index("Side by side"):].splitlines()[5:]}
    assert rows == {"a": ["30.00*", "3.00*"], "b": ["5.00*", "4.00"]}  # b loses on [2]; c is on neither front
    assert pareto_main(["--storage", url, "--study", "hand"]) == 0
    assert "Pareto front on the study's own latency figures: 1 points" in capsys.readouterr().out


def test_plan_measures_each_missing_architecture_once() -> None:
    trials = [create_trial(state=TrialState.COMPLETE, values=[0.1, 1.0], user_attrs={"hash": h}) for h in "aab"]
    for number, t in enumerate(trials):
        t.number = number
    assert plan(trials, {}, refresh=False).measure == {"a": [0, 1], "b": [2]}
    done = plan(trials, {0: report(2.0)}, refresh=False)
    assert done.measure == {"b": [2]} and done.copy == {1: report(2.0)}  # a's figure copied to its twin
    assert plan(trials, {0: report(2.0), 1: report(2.0), 2: report(3.0)}, refresh=True).measure == \
        {"a": [0, 1], "b": [2]}


def test_an_architecture_that_fails_is_logged_and_the_others_recorded(
        hand: tuple[str, optuna.Study], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _, study = hand
    built: list[int] = []

    def build(arch: Architecture, nc: int) -> str:
        built.append(nc)
        if len(built) == 1:
            raise RuntimeError("cannot build\nthis one")
        return "model"

    monkeypatch.setattr("trainers.model.build.build_model", build)
    monkeypatch.setattr("trainers.latency.measure.measure_latency", lambda model, setting, **kw: report(7.0))
    trials = complete(study)
    written, failed = measure_plan(study, trials, plan(trials, {}, refresh=False), setting_of(
        argparse.Namespace(imgsz=None, device="cpu", dtype=None, threads=None, backend=ORT, head=None),
        RunConfig.from_study(study)), nc=3, repeats=1)
    assert failed == ["a"] and written == {target_of(report(7.0))} and built == [3, 3, 3]
    assert read_target(study, target_of(report(7.0))) == {1: report(7.0), 2: report(7.0)}
    err = capsys.readouterr().err
    assert "[1/3] trial 0 [a]: FAILED RuntimeError: cannot build this one" in err and "[3/3] trial 2 [c]: 7.00" in err


def test_predict_prints_the_model_beside_each_measured_figure(hand: tuple[str, optuna.Study],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from search.remeasure import predicted_beside_measured
    from search.study.targets import write_target
    from trainers.latency.predictor import UnseenOperator

    _, study = hand
    target = target_of(report(8.0))
    write_target(study, target, {0: report(8.0), 1: report(10.0)})  # trial 2 not measured on this target

    class Model:
        model_id = "abc123"
        calls = 0

        def predict_ms(self, graph: object) -> float:
            Model.calls += 1
            if Model.calls == 3:
                raise UnseenOperator("operators the latency model abc123 never saw: gelu.default")
            return 9.0

    monkeypatch.setattr("trainers.model.build.build_model", lambda arch, nc: "model")
    monkeypatch.setattr("trainers.latency.predictor.graph_from", lambda model, setting: "graph")
    table = predicted_beside_measured(study, complete(study), target, None, Model(), nc=3).splitlines()
    assert table[0] == f"latency model abc123 on {target}:"
    stock = Architecture.baseline().hash  # the fixture's trials are all the stock architecture
    assert table[2].split() == ["0", stock, "8.00", "9.00", "+12.5%"]
    assert table[3].split() == ["1", stock, "10.00", "9.00", "-10.0%"]
    assert table[4].split()[:3] == ["2", stock, "n/a"] and "never saw: gelu.default" in table[4]


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
