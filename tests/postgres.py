"""A real PostgreSQL server for the tests, in a temporary folder, stopped by its PID.

Started once per test session (`postgres_url` fixture in tests/conftest.py) from the Debian package's binaries
(``/usr/lib/postgresql/<version>/bin``, or ``initdb`` on the PATH). PostgreSQL refuses to run as root: as root,
the server runs as the ``postgres`` user (or ``nobody``), which owns its data folder. Each test gets a database of
its own (`new_database`).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "find_binaries", "start_server"]

DRIVER = "postgresql+psycopg"  # SQLAlchemy dialect + driver: the `postgres` extra installs psycopg


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (the newest installed version), or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    process: subprocess.Popen
    port: int
    folder: Path

    def url(self, database: str = "postgres") -> str:
        return f"{DRIVER}://tests@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this server; its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=tests dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the server by its PID; SIGKILL if it has not stopped after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when this process is root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


def start_server(port: int, timeout_s: float = 60.0) -> PostgresServer:
    """initdb a temporary cluster (trust authentication, user ``tests``) and start ``postgres`` on
    127.0.0.1:`port`; returns once it accepts connections."""
    binaries = find_binaries()
    if binaries is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, postgres)")
    folder = Path(tempfile.mkdtemp(prefix="hnas-postgres-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    user = _run_as()
    if user is not None:
        for path in (folder, sockets):
            os.chown(path, *user)

    def as_user() -> None:
        if user is not None:
            os.setgid(user[1])
            os.setuid(user[0])

    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "tests", "-A", "trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, preexec_fn=as_user, env=env, timeout=120)
    process = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
        stdout=subprocess.DEVNULL, stderr=(folder / "server.log").open("w"), preexec_fn=as_user, env=env)
    server = PostgresServer(process, port, folder)
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(f"host=127.0.0.1 port={port} user=tests dbname=postgres", connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (folder / "server.log").read_text()[-2000:]
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start on port {port}: {log}") from None
            time.sleep(0.2)
