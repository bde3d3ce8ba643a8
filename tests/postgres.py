"""A real PostgreSQL server for the tests: a throwaway cluster in a temporary folder, listening
only on a Unix socket there, started with the server binaries Debian installs (package
``postgresql``) and removed at the end. As root the cluster runs as the ``postgres`` user (the
server refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.system import SEARCH_PATH, free_port, require_tool


def _server_tool(name: str) -> str:
    """``name`` from Debian's versioned server folder, else from PATH (skip or fail if missing)."""
    versioned = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if versioned:
        return versioned[-1]
    found = shutil.which(name, path=SEARCH_PATH)
    return found if found else require_tool(name)


class PostgresServer:
    """A running throwaway server; ``new_database()`` gives the URL of a new, empty database."""

    def __init__(self, folder: Path, port: int, run_as: list[str], options: str = "") -> None:
        self.folder, self.port, self._run_as = folder, port, run_as
        self._options = options
        self._made = 0

    def stop(self) -> None:
        """Stop the server (fast: connections are cut), as an outage does."""
        subprocess.run(
            [
                *self._run_as,
                _server_tool("pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            [
                *self._run_as,
                _server_tool("pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-o",
                self._options,
                "-l",
                str(self.folder / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def new_database(self) -> str:
        self._made += 1
        name = f"gated{self._made}"
        subprocess.run(
            [
                *self._run_as,
                _server_tool("createdb"),
                "-h",
                str(self.folder),
                "-p",
                str(self.port),
                "-U",
                "gated",
                name,
            ],
            check=True,
            capture_output=True,
        )
        return f"postgresql+psycopg://gated@/{name}?host={self.folder}&port={self.port}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running server (stopped and removed at the end)."""
    initdb, pg_ctl = _server_tool("initdb"), _server_tool("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="gated-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as = [require_tool("runuser"), "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    try:
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "gated", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        try:
            yield PostgresServer(folder, port, run_as, options)
        finally:
            subprocess.run(
                [*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for a test module (psycopg needed)."""
    pytest.importorskip("psycopg")
    with postgres_server() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database on each engine in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "shared.db")
    running: PostgresServer = request.getfixturevalue("server")
    return running.new_database()
