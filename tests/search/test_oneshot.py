"""``search.run --mode oneshot`` end to end on a tiny space: supernet, scored subnets, errors, the ablation helper."""

from __future__ import annotations

import math
from pathlib import Path

from optuna.trial import TrialState
from search_helpers import TINY_SPACE, load, run_search


def test_oneshot_run_scores_subnets_on_the_supernet(tmp_path: Path, data: Path) -> None:
    args = ("--mode", "oneshot", "--supernet-epochs", "1", "--subnets", "3", "--retrain-top", "0", "--data", str(data),
            "--imgsz", "64")
    r = run_search(tmp_path, TINY_SPACE, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "supernet epoch 1/1" in r.stderr and "supernet ready" in r.stderr
    assert (tmp_path / "studies" / "space" / "supernet" / "weights" / "last.pt").is_file()
    trials = load(tmp_path, "space").get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs.get("is_baseline")
    for t in trials:
        assert t.user_attrs["source"] == "supernet" and t.user_attrs["recalibrated"] is True
        assert math.isfinite(t.user_attrs["map50_95"]) and math.isfinite(t.values[1]) and t.values[1] > 0
        assert t.user_attrs["hash"] and t.user_attrs["params"] > 0
    again = run_search(tmp_path, TINY_SPACE, *args)  # resumes: the supernet is found, not trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "supernet epoch" not in again.stderr and len(load(tmp_path, "space").get_trials()) == 3
    _ablation_runs(tmp_path, data)


def _ablation_runs(tmp_path: Path, data: Path) -> None:
    """The ablation helper scores a subnet of the run's supernet with and without recalibration."""
    from search.engine.oneshot import load_supernet, recalibration_ablation
    from search.study.config import RunConfig

    study = load(tmp_path, "space")
    cfg = RunConfig.from_study(study)
    supernet = load_supernet(tmp_path / "studies" / "space" / "supernet" / "weights" / "last.pt")
    from trainers.model.architecture import Architecture

    result = recalibration_ablation(supernet, Architecture.baseline(), cfg, 4)
    assert set(result) == {"with", "without"}
    assert all(math.isfinite(result[k]["map50_95"]) for k in result)


def test_oneshot_errors_are_one_line(tmp_path: Path) -> None:
    for args, text in ((("--mode", "oneshot", "--subnets", "0"), "--subnets"),
                       (("--mode", "oneshot", "--backend", "ray"), "--backend ray")):
        r = run_search(tmp_path, TINY_SPACE, *args)
        assert r.returncode == 2, r.stderr
        assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "studies" / "space.db").exists()


def test_the_space_oneshot_section_is_checked(tmp_path: Path) -> None:
    r = run_search(tmp_path, TINY_SPACE + "oneshot: {subnets: 0}\n", "--mode", "oneshot")
    assert r.returncode == 2 and "oneshot.subnets: must be an integer in [1, 100000], got 0" in r.stderr, r.stderr
