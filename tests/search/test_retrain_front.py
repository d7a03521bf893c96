"""Retraining the supernet front stand-alone (``search.engine.retrain_front``): which trials, how, what is recorded."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from search.engine.retrain_front import front_to_retrain, retrain_front
from search.study.config import RunConfig
from search.study.records import record_attrs
from trainers.latency.report import LatencyReport
from trainers.model.architecture import Architecture, StageChoice
from trainers.train.results import TrialSettings


def _report(median: float) -> LatencyReport:
    return LatencyReport(median_ms=median, p90_ms=median, mean_ms=median, cv=0.01, n=20, mode="eager",
                         device="cpu", dtype="float32", batch=1, imgsz=64, threads=1, torch="2.14.1", fused=True,
                         head="nms_free", ci_low_ms=median - 0.1, ci_high_ms=median + 0.1)


def _trial(arch: Architecture, m: float, lat: float, baseline: bool = False) -> optuna.trial.FrozenTrial:
    records = {"metrics": {"map50_95": m, "latency_ms": lat, "params_m": 2.5}, "architecture": arch.to_dict(),
               "latency": {**_report(lat).to_dict(), "cached": False}}
    return create_trial(state=TrialState.COMPLETE, values=[m, lat], params={arch.hash: arch.hash},
                        distributions={arch.hash: CategoricalDistribution([arch.hash])},
                        system_attrs=record_attrs(records),
                        user_attrs={"hash": arch.hash, "source": "supernet", "baseline": baseline,
                                    "params": 2_500_000, "gflops": 0.1})


def test_the_front_is_sampled_evenly_from_most_accurate_to_fastest() -> None:
    archs = [Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=k)}) for k in ((3,), (3, 5))]
    archs += [Architecture.create({"p3_backbone": StageChoice(block="OREPA", kernels=k)}) for k in ((3,), (3, 5))]
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([_trial(Architecture.baseline(), 0.1, 5.0, baseline=True)] +
                     [_trial(a, 0.2 + 0.1 * i, 10.0 + 10 * i) for i, a in enumerate(archs)])
    front = study.trials[1:]
    baseline = study.trials[0]
    assert [t.number for t in front_to_retrain(front + [baseline], baseline, 1)] == [4]  # the most accurate
    assert [t.number for t in front_to_retrain(front, baseline, 2)] == [4, 1]  # and the fastest
    assert [t.number for t in front_to_retrain(front, baseline, 3)] == [4, 2, 1]
    assert [t.number for t in front_to_retrain(front, baseline, 9)] == [4, 3, 2, 1]  # fewer on the front: all


def test_stock_and_the_front_are_retrained_recorded_and_skipped_on_a_rerun(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="one", storage=url, directions=["maximize", "minimize"])
    repvit = Architecture.create({"p3_backbone": StageChoice(block="RepViT", kernels=(3,))})
    orepa = Architecture.create({"p3_backbone": StageChoice(block="OREPA", kernels=(3,))})
    study.add_trials([_trial(Architecture.baseline(), 0.10, 9.0, baseline=True), _trial(repvit, 0.20, 5.0),
                      _trial(orepa, 0.05, 20.0)])  # the front: trial 1 alone (it dominates stock and trial 2)
    cfg = RunConfig(study="one", storage=url, root=str(tmp_path), space_file="", mode="oneshot",
                    trial=TrialSettings(data=str(data), out=str(tmp_path / "one"), epochs=1, imgsz=64, batch=4,
                                        train_threads=1))
    assert retrain_front(study, cfg, 2) == []
    assert ("--retrain-top 2: the supernet front holds 1 architecture(s) besides stock; retraining those"
            in capsys.readouterr().out)
    attrs = study.user_attrs
    assert {k for k in attrs if k.startswith("retrained:")} == {"retrained:0", "retrained:0:plain", "retrained:1",
                                                                "retrained:1:plain"}
    for n, arch in ((0, Architecture.baseline()), (1, repvit)):
        record = attrs[f"retrained:{n}"]
        assert (record["epochs"], record["imgsz"], record["seed"]) == (1, 64, 0)
        assert math.isfinite(record["map50_95"]) and Path(record["path"]).is_file()
        assert Path(record["result"]).parent == tmp_path / "one" / "retrain" / f"trial_{n:04d}_{arch.hash}"
    assert retrain_front(study, cfg, 2) == []  # a rerun: nothing trained again
    assert capsys.readouterr().err.count("was retrained before at this schedule") == 2
