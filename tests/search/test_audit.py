"""The fidelity audit: which architectures it retrains, rank agreement, the record, the '~' ties it adds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from search_helpers import TinyRun, load

from search.audit import choose_trials, hypervolume_contributions, seed_spread_record
from search.pareto import format_table, front_rows
from search.pareto.ranks import average_ranks, kendall_tau, spearman_rho
from search.pareto.report import SPREAD_ATTR, map_seed_spread
from search.study.config import RunConfig
from search.study.records import record_attrs
from trainers.train.results import TrialSettings


def test_rank_agreement_by_hand() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert average_ranks([5.0, 1.0, 5.0]) == [2.5, 1.0, 2.5]
    assert spearman_rho([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert spearman_rho([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="same length >= 2"):
        kendall_tau([1], [1])


def _study(tmp_path: Path, points: list[tuple[str, float, float]]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])
    for i, (name, acc, lat) in enumerate(points):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, lat], params={"x": i}, distributions={"x": CategoricalDistribution(list(range(10)))},
            user_attrs={"hash": name, "blocks": name, "baseline": i == 0},
            system_attrs=record_attrs({"architecture": {},
                                       "metrics": {"map50_95": acc, "latency_ms": lat, "params_m": 2.0}})))
    return study


def test_the_largest_hypervolume_contributions_first_then_random_others(tmp_path: Path) -> None:
    # baseline 10 ms, reference 20 ms; 'wide' adds a big area, 'thin' little, 'off' is dominated
    study = _study(tmp_path, [("base", 0.3, 10.0), ("wide", 0.6, 6.0), ("thin", 0.61, 9.5), ("off", 0.2, 12.0),
                              ("off2", 0.1, 15.0)])
    cfg = RunConfig(study="s", storage="", root=str(tmp_path), space_file="", trial=TrialSettings(data="", out=""))
    from search.pareto import pareto_front

    front = pareto_front(study, cfg.objectives)
    gains = hypervolume_contributions(front, (0.0, 20.0))
    assert gains[1] > gains[2] > 0 and set(gains) == {t.number for t in front}
    chosen = choose_trials(study, cfg, top=1, random_k=2, seed=0)
    assert chosen[0].user_attrs["hash"] == "wide"
    assert len({t.user_attrs["hash"] for t in chosen}) == 3 and all(t.user_attrs["hash"] != "wide" for t in chosen[1:])


def test_map_differences_inside_the_seed_spread_are_marked_as_ties(tmp_path: Path) -> None:
    study = _study(tmp_path, [("base", 0.30, 10.0), ("a", 0.50, 8.0), ("b", 0.52, 9.0), ("c", 0.70, 9.9)])
    front = sorted([t for t in study.trials if t.number != 0], key=lambda t: t.values[1])
    rows = front_rows(front, study.trials[0], map_noise=0.05)
    assert [r["map_within_noise"] for r in rows] == [True, True, False]
    assert "0.5000+-0.0500~" in format_table(rows) and "seed spread" in format_table(rows)
    assert not any(r["map_within_noise"] for r in front_rows(front, study.trials[0]))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.audit", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"})


@pytest.mark.slow
def test_audit_retrains_records_and_prints_the_rank_agreement(tiny_run: TinyRun) -> None:
    tmp_path = tiny_run.root
    assert tiny_run.result.returncode == 0, tiny_run.result.stderr[-3000:]
    url = f"sqlite:///{tmp_path / 'studies' / 'tiny.db'}"
    a = _cli("--storage", url, "--study", "tiny", "--top", "1", "--random", "1", "--epochs", "2", "--seeds", "1",
             cwd=tmp_path)
    assert a.returncode == 0, a.stderr[-3000:]
    record: dict[str, Any] = load(tmp_path, "tiny").user_attrs["audit"]
    assert record["epochs"] == 2 and record["search_epochs"] == 1 and record["seeds"] == 1
    assert len(record["rows"]) == 2 and len({row["hash"] for row in record["rows"]}) == 2
    for row in record["rows"]:
        assert len(row["seed_maps"]) == 2 and 0.0 <= row["audit_map"] <= 1.0
        assert row["seed_spread"] == pytest.approx(max(row["seed_maps"]) - min(row["seed_maps"]))
        assert (tmp_path / "studies" / "tiny" / "audit" / f"trial_{row['trial']:04d}_{row['hash']}" / "e2").is_dir()
    assert -1.0 <= record["kendall_tau"] <= 1.0 and "Kendall tau" in a.stdout and "mAP @2ep" in a.stdout
    json.dumps(record)  # JSON-serialisable as recorded
    spread = load(tmp_path, "tiny").user_attrs["map_seed_spread"]
    assert spread["map50_95"] == record["map_noise"] and (spread["epochs"], spread["imgsz"]) == (1, 64)
    assert "+-" in format_table(front_rows([load(tmp_path, "tiny").trials[0]], None, map_noise=spread["map50_95"]))


def test_the_seed_spread_is_stored_on_the_study_and_read_by_the_report(tmp_path: Path) -> None:
    record = {"search_epochs": 12, "seeds": 2, "map_noise": 0.02, "at": "2026-01-01T00:00:00+00:00",
              "rows": [{"trial": 0, "seed_spread": 0.01}, {"trial": 5, "seed_spread": 0.03},
                       {"trial": 7, "seed_spread": None}]}
    attr = seed_spread_record(record, 128)
    assert attr == {"map50_95": 0.02, "epochs": 12, "imgsz": 128, "seeds": 3, "architectures": 2,
                    "at": "2026-01-01T00:00:00+00:00", "per_architecture": {"0": 0.01, "5": 0.03}}
    study = _study(tmp_path, [("base", 0.30, 10.0)])
    assert map_seed_spread(study) is None
    study.set_user_attr("audit", {"map_noise": 0.04})  # an audit recorded before map_seed_spread existed
    assert map_seed_spread(study) == 0.04
    study.set_user_attr(SPREAD_ATTR, attr)
    assert map_seed_spread(study) == 0.02


def test_bad_audit_arguments_are_one_line_exit_2(tmp_path: Path) -> None:
    few = _cli("--storage", "sqlite:///x.db", "--study", "s", "--top", "1", "--random", "0", "--epochs", "2",
               cwd=tmp_path)
    assert few.returncode == 2 and few.stderr.count("\n") == 1 and "at least 2" in few.stderr
    missing = _cli("--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "s", "--epochs", "2", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no such SQLite file" in missing.stderr
