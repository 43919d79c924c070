"""A throwaway real PostgreSQL server for tests: Debian's binaries (``initdb`` + ``pg_ctl``) on a
free loopback port, its data in a temp dir owned by the ``postgres`` system user (``initdb``
refuses to run as root). ``postgres_server`` is session-scoped; ``pg_url`` gives each test a fresh
database on it. Tests skip, naming why, only when no PostgreSQL binaries are installed
(``make postgres`` installs them)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PgServer:
    """A running server: ``url(db)`` names a database on it; ``admin`` runs SQL as superuser."""

    bin: Path
    data: Path
    port: int
    as_user: list[str]

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=on"
        self.ctl("-o", opts, "-l", str(self.data / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-m", mode, "-w", check=False)


def start_server(root: Path) -> PgServer:
    """initdb + pg_ctl start in ``root`` (as the postgres user when run as root)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql (run `make postgres`)")
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        pwd.getpwnam("postgres")  # KeyError: Debian's package creates this user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
         "--no-sync", "-E", "UTF8"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    server = PgServer(bin_dir, data, free_port(), as_user)
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    root = Path(tempfile.mkdtemp(prefix="hyrec-pg-"))
    os.chmod(root, 0o755)
    server = start_server(root)
    try:
        yield server
    finally:
        # immediate: no shutdown checkpoint (with fsync=on it took 30 s on busy cores) for a data
        # folder that is deleted next
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database on the session's server."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.admin(f"CREATE DATABASE {db}")
    return postgres_server.url(db)
