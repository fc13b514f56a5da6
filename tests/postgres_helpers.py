"""A real, throwaway PostgreSQL server for the tests (and the ledger benchmark's figures in docs/benchmarks.md):
Debian's package, a fresh cluster in a temporary folder, listening on 127.0.0.1 only, trust authentication,
one empty database. The tests that need it are skipped, with the reason, where PostgreSQL or psycopg is
absent (`.ci/run` installs both)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

POSTGRES_USER = "postgres"  # Debian's package creates it; the server refuses to run as root


def postgres_bin() -> Path | None:
    """Debian keeps the server's programs off PATH, in /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def why_not_available() -> str | None:
    """None when a PostgreSQL server can be started here, else why not."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -c constraints.txt -e '.[test]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: the PostgreSQL server cannot run as another user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_database(name: str = "gatelab") -> Iterator[str]:
    """Start a cluster, create database `name`, yield its URI; stop and remove everything after."""
    bin_dir = postgres_bin()
    as_owner = ["runuser", "-u", POSTGRES_USER, "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="gatelab-postgres-"))
    data, port = root / "data", _free_port()
    if as_owner:
        shutil.chown(root, POSTGRES_USER)

    def run(*cmd: str) -> None:
        subprocess.run([*as_owner, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        try:
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres") as connection:
                connection.autocommit = True
                connection.execute(f'CREATE DATABASE "{name}"')
            yield f"postgresql://{POSTGRES_USER}@127.0.0.1:{port}/{name}"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
