"""Successive halving and ``--timeout`` in real searches: real SQLite studies, real trial processes.

Domination is made deterministic without touching the trial processes: the study is seeded with
finished (PRUNED) trials whose recorded per-epoch mAP and latency beat, or lose to, anything a
1-epoch model can reach (they count as finished trials of the study), and with the OREPA
architecture enqueued, so the search trains exactly the stock baseline and OREPA.
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial
from search_helpers import FIXED_SPACE, TINY_SPACE, load, run_search, trial_dirs

from search.engine.rungs import rung_decision
from search.study.records import read_record, record_attrs

pytestmark = pytest.mark.slow

SPACE = """
stages:
  p3_backbone: {block: [C3k2, OREPA]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 3, imgsz: 64, batch: 4, rungs: [1], eta: 2, rung_min_signal: 0}
"""  # rung_min_signal 0: 1-epoch models all score mAP ~0, the seeded trials make the domination
OBJECTIVES = (("map50_95", "maximize"), ("latency_ms", "minimize"))


def seed_study(tmp: Path, name: str, points: list[tuple[float, float]]) -> None:
    """Create study ``name`` holding one finished trial per (mAP at every epoch, latency ms), then OREPA enqueued."""
    (tmp / "studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{tmp / 'studies' / f'{name}.db'}",
                                directions=["maximize", "minimize"])
    for i, (m, latency) in enumerate(points):
        study.add_trial(create_trial(
            state=TrialState.PRUNED, user_attrs={"hash": f"seeded{i:06d}", "prune_reason": "seeded by the test"},
            system_attrs=record_attrs({"epoch_map": [m] * 3, "metrics": {"latency_ms": latency}})))
    study.enqueue_trial({"p3_backbone.block": "OREPA"})


def trained(study: optuna.Study) -> tuple[FrozenTrial, FrozenTrial]:
    """The baseline trial and the OREPA trial of a search over ``SPACE`` (which trains nothing else)."""
    by_block = {t.user_attrs["blocks"].split("/")[1]: t for t in study.trials if "blocks" in t.user_attrs}
    assert sorted(by_block) == ["C3k2", "OREPA"], by_block
    return by_block["C3k2"], by_block["OREPA"]


def test_a_dominated_trial_stops_at_the_first_rung_and_the_baseline_never_does(tmp_path: Path, data: Path) -> None:
    seed_study(tmp_path, "stop", [(0.99, 0.001)])  # trial 0 dominates any real trial
    r = run_search(tmp_path, SPACE, "--data", str(data), "--trials", "3", "--study", "stop")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "stop")
    base, orepa = trained(study)
    assert len(study.trials) == 3 and base.user_attrs["baseline"] and base.state == TrialState.COMPLETE
    assert len(read_record(base, "epoch_map")) == 3  # trained to the end although ...
    (at_rung,) = read_record(base, "rungs")
    assert not at_rung["go_on"] and at_rung["dominated_by"][0] == 0  # ... it ranked outside the top 1/eta
    assert "goes on (the baseline is never stopped) at rung 1" in r.stderr

    assert orepa.state == TrialState.PRUNED
    reason = orepa.user_attrs["prune_reason"]
    assert reason.startswith("stopped at rung 1 (epoch 1 of 3): rank ") and "top 1 (1/eta, eta 2) go on" in reason
    assert "dominated by trials [0" in reason and read_record(orepa, "stopped_at")["dominated_by"][0] == 0
    assert len(read_record(orepa, "epoch_map")) == 1 and len(read_record(orepa, "epoch_map50")) == 1
    assert read_record(orepa, "metrics")["latency_ms"] == read_record(orepa, "latency")["median_ms"] > 0
    (folder,) = [f for f in trial_dirs(tmp_path, "stop") if f.name.endswith(orepa.user_attrs["hash"])]
    log = (folder / "trial.log").read_text()
    assert "epoch 1/3" in log and "epoch 2/3" not in log  # killed at the rung, not trained on
    shown = re.search(r"epoch 1/3 mAP50-95 \d\.\d{3} \(\d+ s, (\d+) thread\(s\)\)", log)  # CPU threads shown
    assert shown and orepa.user_attrs["epoch_threads"] == [int(shown.group(1))]  # recorded on a stopped trial too
    assert len(base.user_attrs["epoch_threads"]) == 3
    assert "Successive halving: 1 trial(s) stopped at a rung (1 at epoch 1)" in r.stdout
    assert "Pareto front" in r.stdout


def test_two_workers_let_non_dominated_trials_go_on_and_decide_consistently(tmp_path: Path, data: Path) -> None:
    seed_study(tmp_path, "go", [(0.0, 1e6)] * 3)  # three slow, useless trials: any real trial beats them
    r = run_search(tmp_path, SPACE, "--data", str(data), "--trials", "5", "--study", "go", "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "go")
    real = trained(study)
    assert len(study.trials) == 5
    assert [t.state for t in real] == [TrialState.COMPLETE] * 2, [t.user_attrs.get("prune_reason") for t in real]
    assert {len(read_record(t, "epoch_map")) for t in real} == {3}
    decisions = [read_record(t, "rungs")[0] for t in real]
    assert all(d["go_on"] and d["keep"] == d["of"] // 2 and d["position"] <= 2 for d in decisions)
    later = max(decisions, key=lambda d: d["of"])  # the one that reached the rung second saw the other's value
    assert later["of"] == 5
    again = rung_decision(study, later["number"], OBJECTIVES, 1, 2, min_signal=0)  # stored values: same decision
    assert again is not None and again.to_dict() == later


def test_timeout_starts_no_new_trial_and_still_reports(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, FIXED_SPACE, "--data", str(data), "--trials", "5", "--study", "late", "--timeout", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--timeout 1 s reached: no new trial starts" in r.stderr
    study = load(tmp_path, "late")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # the baseline, started at once, finished
    assert "Study 'late': 1 finished trials" in r.stdout and "Pareto front" in r.stdout


@pytest.mark.slow
def test_epoch_budget_starts_no_new_trial_once_spent(tmp_path: Path, data: Path) -> None:
    r = run_search(tmp_path, TINY_SPACE, "--data", str(data), "--trials", "6", "--study", "spent", "--epoch-budget",
                   "2", "--rungs", "", "--seed", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--epoch-budget 2 epochs trained: no new trial starts" in r.stderr
    study = load(tmp_path, "spent")
    trained = [t for t in study.trials if read_record(t, "epoch_map") and "reused_from" not in t.user_attrs]
    assert sum(len(read_record(t, "epoch_map")) for t in trained) == 2  # two 1-epoch trials, then no third
    assert "Pareto front" in r.stdout
