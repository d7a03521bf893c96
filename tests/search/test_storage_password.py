"""The password of a ``--storage`` URL stays out of every output (issue 34, item 8).

It is used to connect and nowhere else: the study records, prints and ships the URL without it, and the
commands that read the study back take it from the URL their user gives or from ``PGPASSWORD``/``~/.pgpass``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from search_helpers import FIXED_SPACE, run_search

from search.ship.model_card import reproduce_commands
from search.study.artifacts import dashboard_command
from search.study.config import RunConfig, url_without_password
from trainers.train.results import TrialSettings

SECRET = "Pw0rd-d3adb33f"  # unique enough that any occurrence is the leak
URL = f"postgresql+psycopg2://alice:{SECRET}@db.example:5432/nas"


def test_url_without_password_keeps_everything_else() -> None:
    assert url_without_password(URL) == "postgresql+psycopg2://alice@db.example:5432/nas"
    for kept in ("sqlite:////tmp/s.db", "sqlite:///:memory:", "postgresql://alice@h/db", "not a url"):
        assert url_without_password(kept) == kept


def test_run_config_records_and_prints_no_password(tmp_path: Path) -> None:
    cfg = RunConfig(study="s", storage=URL, root=str(tmp_path), space_file="space.yaml",
                    trial=TrialSettings(data="d.yaml", out=str(tmp_path / "s")))
    assert SECRET not in json.dumps(cfg.to_record()) and SECRET not in cfg.command()
    assert "--storage postgresql+psycopg2://alice@db.example:5432/nas" in cfg.command()
    assert RunConfig.from_record(cfg.to_record()).storage == "postgresql+psycopg2://alice@db.example:5432/nas"
    assert SECRET not in dashboard_command(cfg) and "alice@db.example" in dashboard_command(cfg)
    chosen = SimpleNamespace(trial=SimpleNamespace(number=3), config=cfg, target=None)
    args = SimpleNamespace(storage=URL, study="s", out=tmp_path / "ship", weights=None)
    commands = reproduce_commands(chosen, args, None, 64, None)
    assert SECRET not in "\n".join(commands) and all("alice@db.example" in c for c in commands)


@pytest.fixture
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A throwaway server whose TCP connections need a password: (URL with it, URL without it)."""
    from pg_server import PostgresServer, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="repnas-pg-pw-"))
    server = PostgresServer(root).start()
    try:
        yield server.require_password(SECRET), server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _cli(*args: str, cwd: Path, pgpassword: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"} | {"YOLO_OFFLINE": "1"}
    env["PGPASSFILE"] = str(cwd / "no-pgpass")  # not the user's ~/.pgpass
    if pgpassword is not None:
        env["PGPASSWORD"] = pgpassword
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def _database_text(url: str) -> str:
    """Every row of every table of the study database, as text (what a dump of it shows)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    rows = []
    with engine.connect() as conn:
        for table in sqlalchemy.inspect(conn).get_table_names():
            rows += [repr(tuple(r)) for r in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    assert rows
    return "\n".join(rows)


@pytest.mark.slow
def test_a_postgresql_study_with_a_password_never_shows_it(tmp_path: Path, data: Path,
                                                           pg: tuple[str, str]) -> None:
    with_pw, without_pw = pg
    with pytest.raises(Exception, match="password"):  # the server does ask for it
        optuna.load_study(study_name="x", storage=without_pw)
    r = run_search(tmp_path, FIXED_SPACE, "--data", str(data), "--trials", "1", "--study", "pw", "--storage", with_pw)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Dashboard: optuna-dashboard postgresql+psycopg2://postgres@127.0.0.1" in r.stdout
    assert "in postgresql+psycopg2://postgres:***@127.0.0.1" in r.stderr  # the header line
    outputs = [r.stdout, r.stderr]

    out = tmp_path / "ship"  # read back with the password from PGPASSWORD: the study has none to give
    e = _cli("search.export", "--storage", without_pw, "--study", "pw", "--trial", "0", "--imgsz", "64",
             "--out", str(out), cwd=tmp_path, pgpassword=SECRET)
    assert e.returncode == 0, e.stderr[-3000:]
    outputs += [e.stdout, e.stderr]
    no_pw = _cli("search.export", "--storage", without_pw, "--study", "pw", "--trial", "0", "--out",
                 str(tmp_path / "none"), cwd=tmp_path, pgpassword=None)
    assert no_pw.returncode == 2 and "password" in no_pw.stderr, no_pw.stderr[-2000:]
    outputs += [no_pw.stdout, no_pw.stderr]

    card = json.loads((out / "model_card.json").read_text())
    assert any(f"--storage {without_pw}" in c for c in card["commands"])  # runnable with PGPASSWORD
    for i, text in enumerate(outputs):
        assert SECRET not in text, (i, text[-2000:])
    study = optuna.load_study(study_name="pw", storage=with_pw)
    attrs = [study.user_attrs] + [[t.user_attrs, t.system_attrs] for t in study.trials]
    assert "run_config" in study.user_attrs and SECRET not in json.dumps(attrs, default=str)
    assert SECRET not in _database_text(with_pw)  # system attrs of the study and records included
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # studies folder, artifacts, export folder, logs
    assert any(".artifacts" in str(p) for p in files) and any(p.name == "model_card.md" for p in files)
    leaking = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaking
