"""A throwaway local PostgreSQL server for tests: initdb in a temp dir, a free loopback port.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user
(``runuser``). Debian puts the binaries in ``/usr/lib/postgresql/*/bin``. The server can be
stopped and started again on the same port and data (:meth:`PostgresServer.stop`,
:meth:`PostgresServer.start`): the database outage of ``test_storage_outage.py``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None`` when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """Start with :meth:`start`, stop with :meth:`stop` (and start again); :attr:`url` is an SQLAlchemy URL."""

    def __init__(self, root: Path):
        self.bin = pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        """Create the cluster on first use, then start the server and wait until it accepts connections."""
        assert self.bin is not None
        if not self.data.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if self.as_user:
                shutil.chown(self.root, "postgres", "postgres")
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w",
                  "start")
        return self

    def require_password(self, password: str) -> str:
        """Give the ``postgres`` role ``password`` and make TCP connections need it (scram-sha-256);
        returns the URL with the password (:attr:`url` stays without it)."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("SET password_encryption = 'scram-sha-256'"))
            conn.execute(sqlalchemy.text(f"ALTER ROLE postgres PASSWORD '{password}'"))
        engine.dispose()
        hba = self.data / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")
        return self.url.replace("postgres@", f"postgres:{password}@", 1)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: drop every connection at once, like a crash; ``fast``: a clean stop)."""
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)
