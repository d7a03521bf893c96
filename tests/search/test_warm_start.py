"""A search and a retrain that learn from a teacher and start warm (``--teacher``/``--init-from``, ``baseline``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from search_helpers import cli, load, run_search

from search.study.records import read_record
from trainers.train.teacher import file_sha256

pytestmark = pytest.mark.slow

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT]}
latency: {imgsz: 64, device: cpu}
train: {epochs: 1, imgsz: 64, batch: 4, distill_weight: 3.0}
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    tmp = tmp_path_factory.mktemp("warm")
    r = run_search(tmp, SPACE, "--data", str(data), "--trials", "2", "--study", "warm", "--seed", "1",
                   "--teacher", "baseline", "--init-from", "baseline")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp


def test_baseline_teaches_and_initialises_every_later_trial(study_dir: Path) -> None:
    study = load(study_dir, "warm")
    base, other = study.trials
    assert base.user_attrs["baseline"] and "teacher" not in base.user_attrs  # the baseline trains plain
    weights = Path(base.user_attrs["weights"])
    sha = file_sha256(weights)
    assert other.state.name == "COMPLETE"
    teacher, init = read_record(other, "teacher"), read_record(other, "init_from")
    assert teacher["path"] == init["path"] == str(weights) and teacher["sha256"] == sha
    assert other.user_attrs["teacher"].startswith(sha[:12]) and base.user_attrs["hash"] in other.user_attrs["teacher"]
    assert 0 < other.user_attrs["inherited_share"] == read_record(other, "inherited")["share"] <= 1
    job = json.loads(next((study_dir / "studies" / "warm").glob("trial_0001_*/trial.json")).read_text())
    assert job["settings"]["teacher"] == str(weights) and job["settings"]["distill_weight"] == 3.0
    recorded = study.user_attrs["run_config"]["trial"]
    assert recorded["teacher"] == recorded["init_from"] == "baseline"  # resolved per trial, recorded as asked


def test_retrain_with_and_without_teacher_and_the_card_compares_them(study_dir: Path, data: Path) -> None:
    storage = f"sqlite:///{study_dir / 'studies' / 'warm.db'}"
    common = ["search.retrain", "--storage", storage, "--study", "warm", "--trial", "1", "--data", str(data),
              "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu"]
    r = cli(*common, "--out", str(study_dir / "plain"), cwd=study_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(*common, "--teacher", "baseline", "--out", str(study_dir / "taught"), cwd=study_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(study_dir, "warm")
    plain, taught = study.user_attrs["retrained:1:plain"], study.user_attrs["retrained:1:teacher"]
    assert plain["teacher"] is None and taught["teacher"]["path"] == study.trials[0].user_attrs["weights"]
    out = study_dir / "export"
    r = cli("search.export", "--storage", storage, "--study", "warm", "--trial", "1", "--imgsz", "64", "--out",
            str(out), cwd=study_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "model_card.json").read_text())
    assert card["teacher_comparison"]["map50_95_with_teacher"] == taught["map50_95"]
    assert card["teacher_comparison"]["map50_95_without_teacher"] == plain["map50_95"]
    assert card["warm_start"]["retrained_teacher"]["sha256"] == taught["teacher"]["sha256"]
    assert "--teacher" in card["commands"][1] and "with the teacher" in (out / "model_card.md").read_text()


def test_a_bad_teacher_stops_the_search_before_anything_trains(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "teacher.pt"
    bad.write_text("names: [a]\n")
    r = run_search(tmp_path, SPACE, "--data", str(data), "--trials", "2", "--study", "bad", "--teacher", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--teacher" in r.stderr, r.stderr
    assert "not an Ultralytics checkpoint" in r.stderr and not (tmp_path / "studies" / "bad").exists()
    r = run_search(tmp_path, SPACE, "--data", str(data), "--init-from", str(tmp_path / "missing.pt"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--init-from" in r.stderr, r.stderr
