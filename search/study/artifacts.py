"""Readable copies of a study's records as Optuna artifacts, for optuna-dashboard's artifact pages.

Each trial gets ``architecture.json``, ``records.json`` (every record of the trial: latency
report, metrics, per-epoch mAP, rung decisions, versions; :mod:`search.study.records`) and, when it
trained, its ``results.csv`` (Ultralytics' per-epoch table) and ``trial.log``. The study gets
the Pareto report (``pareto.png``, ``pareto.txt``, ``pareto.json``) and, uploaded by whoever
writes them, model cards.

The store is a :class:`optuna.artifacts.FileSystemArtifactStore` beside the study
(:func:`artifact_dir`): for ``sqlite:///studies/yolo26.db`` it is ``studies/yolo26.artifacts``, so

    optuna-dashboard sqlite:///studies/yolo26.db --artifact-dir studies/yolo26.artifacts

shows them. Optuna attaches an artifact to a trial through the trial's system attrs, which it
refuses to change once the trial is told: a trial's files are uploaded when its work is done,
before it is told (:func:`upload_trial_artifacts`, called by the drivers). A study's files can
be uploaded at any time; one whose content is already there under the same name is not uploaded
again, so a resumed study that reports an unchanged front adds nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from search.study.config import RunConfig, url_without_password
from search.study.records import read_record, records_of
from trainers.cli import log

ARTIFACT_SUFFIX = ".artifacts"
TRIAL_RUN_FILES = ("results.csv", "trial.log")  # from the trial's run folder, when it trained
STUDY_REPORT_FILES = ("pareto.png", "pareto.txt", "pareto.json")  # from the study folder, after each report
MIMETYPES = {".log": "text/plain"}  # shown by the dashboard rather than downloaded (no standard type)


def artifact_dir(cfg: RunConfig) -> Path:
    """The artifact folder of the study ``cfg`` describes: beside its SQLite file (``<db name>.artifacts``),
    else ``<studies folder>/<study>.artifacts``."""
    prefix = "sqlite:///"
    if cfg.storage.startswith(prefix) and ":memory:" not in cfg.storage:
        db = Path(cfg.storage[len(prefix):])
        return db.with_name(db.stem + ARTIFACT_SUFFIX)
    return Path(cfg.root) / f"{cfg.study}{ARTIFACT_SUFFIX}"


def artifact_store(cfg: RunConfig) -> FileSystemArtifactStore:
    """The study's artifact store (its folder created)."""
    folder = artifact_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def dashboard_command(cfg: RunConfig) -> str:
    """The optuna-dashboard command line that shows the study with its artifacts (the storage URL's password left
    out: the dashboard reads it from ``PGPASSWORD`` / ``~/.pgpass``,
    :func:`~search.study.config.url_without_password`)."""
    return f"optuna-dashboard {url_without_password(cfg.storage)} --artifact-dir {artifact_dir(cfg)}"


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of a running trial (records included), read through its storage."""
    storage = trial.storage
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))


def upload_trial_artifacts(store: FileSystemArtifactStore, trial: optuna.Trial, cfg: RunConfig) -> list[str]:
    """Upload the running ``trial``'s files (see the module docstring); the names uploaded.

    Call it when the trial's work is done and before it is told: a told trial takes no artifact.
    """
    frozen = _frozen(trial)
    uploaded = []
    with tempfile.TemporaryDirectory() as tmp:
        arch = read_record(frozen, "architecture")
        written = [_json_file(Path(tmp) / "records.json", records_of(frozen))]
        if arch is not None:
            written.insert(0, _json_file(Path(tmp) / "architecture.json", arch))
        for path in written:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            uploaded.append(path.name)
    arch_hash = frozen.user_attrs.get("hash")
    if arch_hash is not None and "reused_from" not in frozen.user_attrs:
        folder = cfg.trial_folder(trial.number, arch_hash)
        for name in TRIAL_RUN_FILES:
            if (folder / name).is_file():
                upload_artifact(artifact_store=store, file_path=str(folder / name), study_or_trial=trial,
                                mimetype=MIMETYPES.get(Path(name).suffix))
                uploaded.append(name)
    return uploaded


def attach_trial_artifacts(store: FileSystemArtifactStore, trial: optuna.Trial, cfg: RunConfig) -> None:
    """:func:`upload_trial_artifacts`, a failure logged as one warning line: the trial is told all the same."""
    try:
        upload_trial_artifacts(store, trial, cfg)
    except Exception as e:  # a full disk or a storage hiccup must not lose a trial that trained
        log(f"warning: trial {trial.number}: artifacts not uploaded ({type(e).__name__}: {e})"[:300])


def _json_file(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def upload_study_artifacts(store: FileSystemArtifactStore, study: optuna.Study, paths: Sequence[Path]) -> list[str]:
    """Upload each existing file of ``paths`` to the study, unless the same name with the same content is there.

    Returns the names uploaded.
    """
    have: dict[str, list[str]] = {}
    for meta in get_all_artifact_meta(study):
        have.setdefault(meta.filename, []).append(meta.artifact_id)
    uploaded = []
    for path in paths:
        if not path.is_file():
            continue
        content = path.read_bytes()
        if any(_stored_bytes(store, artifact_id) == content for artifact_id in have.get(path.name, [])):
            continue
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
        uploaded.append(path.name)
    return uploaded


def _stored_bytes(store: FileSystemArtifactStore, artifact_id: str) -> bytes | None:
    """The content of a stored artifact (``None`` when the store lacks it)."""
    try:
        with store.open_reader(artifact_id) as f:
            return f.read()
    except ArtifactNotFound:  # removed from the folder by hand, or another store: upload again
        return None
