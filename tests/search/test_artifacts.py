"""A study people can read in optuna-dashboard: short user attrs, named metrics, files as artifacts.

The last test runs a real (tiny) search, with the training process replaced by one that writes
what a trial writes, then starts ``optuna-dashboard --artifact-dir`` on the study and reads its
JSON API as the dashboard's pages do.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta

from search.run import validate
from search.study.artifacts import artifact_dir, upload_study_artifacts
from search.study.config import RunConfig
from search.study.records import read_record
from trainers.train.results import TrialJob, TrialResult, TrialSettings

SPACE = """
stages:
  p3_backbone: {block: [C3k2, RepViT]}
latency: {imgsz: 64, device: cpu, dtype: float32}
train: {epochs: 2, imgsz: 64, batch: 2, rungs: []}
"""
MAX_ATTR_CHARS = 120
LATENCY_LINE = re.compile(r"^\d+\.\d ms \+/- \d+\.\d \(cpu, float32, 64 px, 1 thread\)$")


def _config(storage: str, root: Path) -> RunConfig:
    return RunConfig(study="s", storage=storage, root=str(root), space_file="",
                     trial=TrialSettings(data="", out=str(root / "s")))


def test_the_artifact_folder_sits_beside_the_study(tmp_path: Path) -> None:
    db = tmp_path / "studies" / "yolo26.db"
    assert artifact_dir(_config(f"sqlite:///{db}", tmp_path)) == tmp_path / "studies" / "yolo26.artifacts"
    pg = _config("postgresql://u@host/db", tmp_path / "studies")
    assert artifact_dir(pg) == tmp_path / "studies" / "s.artifacts"


def test_a_study_file_is_uploaded_again_only_when_it_changed(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", directions=["maximize", "minimize"])
    store = FileSystemArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    report = tmp_path / "pareto.txt"
    report.write_text("front v1\n")
    assert upload_study_artifacts(store, study, [report, tmp_path / "missing.png"]) == ["pareto.txt"]
    assert upload_study_artifacts(store, study, [report]) == []  # a resumed study reporting the same front
    report.write_text("front v2\n")
    assert upload_study_artifacts(store, study, [report]) == ["pareto.txt"]
    assert [m.filename for m in get_all_artifact_meta(study)] == ["pareto.txt", "pareto.txt"]


def test_the_ray_searcher_attaches_a_trials_files_before_it_tells_it(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune.search")
    from search.engine.per_trial import PerTrialObjective
    from search.engine.ray_searcher import OptunaAskTell
    from search.study.artifacts import artifact_store, attach_trial_artifacts
    from search.study.storage import open_study

    (tmp_path / "space.yaml").write_text(SPACE)
    cfg, space = validate(["--space", str(tmp_path / "space.yaml"), "--studies-dir", str(tmp_path / "studies"),
                           "--study", "ray"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study("ray", optuna.storages.RDBStorage(cfg.storage), cfg.objectives,
                       optuna.samplers.RandomSampler(seed=0))
    store, states = artifact_store(cfg), []

    def attach(trial: optuna.Trial) -> None:
        states.append(study.trials[trial.number].state)  # what the trial is when its files go up
        attach_trial_artifacts(store, trial, cfg)

    searcher = OptunaAskTell(study, PerTrialObjective(space, cfg), target=1, before_tell=attach)
    assert searcher.suggest("tune-1")["number"] == 0
    searcher.on_trial_complete("tune-1", {"state": "PRUNED", "values": None, "note": "over budget"})
    (done,) = study.trials
    assert done.state == optuna.trial.TrialState.PRUNED and states == [optuna.trial.TrialState.RUNNING]
    metas = get_all_artifact_meta(done, storage=optuna.storages.RDBStorage(cfg.storage))
    assert sorted(m.filename for m in metas) == ["architecture.json", "records.json"]


@pytest.fixture
def searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunConfig:
    """A finished two-trial search (stock C3k2, then a sampled architecture) with fake training."""
    import search.engine.runner
    import trainers.latency.measure
    from search.engine.optuna_driver import run_search
    from search.engine.per_trial import PerTrialObjective

    (tmp_path / "space.yaml").write_text(SPACE)
    cfg, space = validate(["--space", str(tmp_path / "space.yaml"), "--studies-dir", str(tmp_path / "studies"),
                           "--study", "dash", "--trials", "2", "--sampler", "random", "--seed", "1"])
    cfg = cfg.with_trial(data=str(tmp_path / "data.yaml"), nc=5)
    real_measure = trainers.latency.measure.measure_latency

    def measure(*a: Any, **kw: Any) -> Any:
        return real_measure(*a, **{**kw, "repeats": 3, "warmup": 1, "min_seconds": 0.0})

    def trial_process(job: TrialJob, prefix: str = "", timeout: float | None = None) -> TrialResult:
        out = Path(job.settings.out)
        job.write(out)  # trial.json and architecture.json, as the real runner does
        (out / "results.csv").write_text("epoch,metrics/mAP50-95(B)\n1,0.2\n2,0.25\n")
        (out / "trial.log").write_text("epoch 1/2 ...\nepoch 2/2 ...\n")
        assert job.pre_training is not None
        pre = job.pre_training
        return TrialResult(job.architecture.hash, job.architecture.to_dict(), 0.25, 0.5, pre.params, pre.gflops,
                           pre.latency, 1.0, "weights/best.pt", "cpu", job.settings.epochs, (0.2, 0.25))

    monkeypatch.setattr(trainers.latency.measure, "measure_latency", measure)
    monkeypatch.setattr(search.engine.runner, "run_trial_process", trial_process)
    monkeypatch.setenv("REPNAS_LOCK_DIR", str(tmp_path / "locks"))
    assert run_search(cfg, PerTrialObjective(space, cfg)) == 0
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, deadline: float) -> bytes:
    """GET ``url``, retrying until the server answers (or ``deadline``, a ``time.time()``)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return bytes(r.read())
        except (urllib.error.URLError, ConnectionError):
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _short_attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def test_optuna_dashboard_shows_metric_names_short_attrs_and_artifacts(searched: RunConfig) -> None:
    cfg = searched
    study = optuna.load_study(study_name=cfg.study, storage=cfg.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert read_record(study.trials[0], "architecture")["stages"]["p3_backbone"]["block"] == "C3k2"
    exe = shutil.which("optuna-dashboard")
    assert exe is not None, "optuna-dashboard (a dependency of this project) is not installed"
    port = _free_port()
    server = subprocess.Popen([exe, cfg.storage, "--artifact-dir", str(artifact_dir(cfg)), "--port", str(port),
                               "--host", "127.0.0.1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 90
        studies = json.loads(_get(f"{base}/api/studies", deadline))["study_summaries"]
        (entry,) = [s for s in studies if s["study_name"] == "dash"]
        detail = json.loads(_get(f"{base}/api/studies/{entry['study_id']}", deadline))
        assert detail["objective_names"] == ["map50_95", "latency_ms"]  # optuna-dashboard's key for metric names
        assert {"pareto.png", "pareto.txt", "pareto.json"} <= {a["filename"] for a in detail["artifacts"]}
        for trial in detail["trials"]:
            attrs = _short_attrs(trial)
            assert {"hash", "blocks", "params", "gflops", "latency"} <= set(attrs), attrs
            assert not {"architecture", "metrics", "epoch_map", "versions"} & set(attrs)  # records are not shown
            too_long = {k: v for k, v in attrs.items() if len(v) > MAX_ATTR_CHARS}
            assert not too_long, f"trial {trial['number']}: user attrs over {MAX_ATTR_CHARS} chars: {too_long}"
            assert LATENCY_LINE.match(attrs["latency"]), attrs["latency"]
            names = {a["filename"]: a["artifact_id"] for a in trial["artifacts"]}
            assert {"architecture.json", "records.json"} <= set(names), names
            if "reused_from" not in attrs:  # a trial that trained: its run's files too
                assert {"results.csv", "trial.log"} <= set(names), names
                types = {a["filename"]: a["mimetype"] for a in trial["artifacts"]}
                assert types["trial.log"] == "text/plain" and types["results.csv"] == "text/csv"
            served = _get(f"{base}/artifacts/{entry['study_id']}/{trial['trial_id']}/{names['architecture.json']}",
                          deadline)
            assert set(json.loads(served)["stages"]["p3_backbone"]) >= {"block"}
            records = json.loads(_get(f"{base}/artifacts/{entry['study_id']}/{trial['trial_id']}/"
                                      f"{names['records.json']}", deadline))
            assert records["latency"]["imgsz"] == 64 and records["metrics"]["map50_95"] == 0.25
    finally:
        server.terminate()
        server.wait(timeout=30)
