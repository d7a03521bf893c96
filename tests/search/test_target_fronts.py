"""Latency targets on a hand-made study: pick and the fronts on a target, the re-measure plan, failures, predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from search_helpers import complete

from search.pareto.__main__ import main as pareto_main
from search.pick import PickError, check_pick_args, pick
from search.remeasure import measure_plan, plan, setting_of
from search.study.config import RunConfig
from search.study.records import record_attrs
from search.study.targets import read_target, target_of, write_target
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture
from trainers.train.results import TrialSettings

ORT = "onnxruntime"


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
