"""Fixtures of the search tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of coco8, or a tiny synthetic set without ../shared (Ultralytics writes caches there)."""
    from tests.detection_data import private_detection_data

    return private_detection_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data: Path) -> object:
    """One finished tiny search for the tests that read and resume it (``search_helpers.TinyRun``)."""
    from search_helpers import TINY_SPACE, TinyRun, run_search, stale_baseline

    root = tmp_path_factory.mktemp("tiny_run")
    key, stale = stale_baseline(root / "studies" / "latency_cache.json")
    args = ("--data", str(data), "--trials", "3", "--study", "tiny", "--device", "cpu", "--seed", "1")
    return TinyRun(root, run_search(root, TINY_SPACE, *args), key, stale, args)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A throwaway PostgreSQL server for the whole test session (``.ci/run`` installs it when missing)."""
    from pg_server import PostgresServer, pg_bin

    if pg_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="repnas-pg-"))
    server = PostgresServer(root).start()
    yield server.url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
