"""How every SQLite file of the project is opened (latency tables, Optuna studies): one busy timeout, WAL so
readers (the dashboard, a second search) never block the writer, and reads that write nothing."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "apply_pragmas", "enable_wal", "read_only_mode"]

SQLITE_BUSY_TIMEOUT_MS = 60_000  # a writer waits this long for another process's lock before failing


def enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the database to WAL (persistent, so usually a no-op), retrying while another process holds it.

    Changing the journal mode of a new file can fail with "database is locked" at once, without SQLite's busy
    handler, when another process opens the same new file at the same moment; retry up to the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay_s = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 0.1)


def apply_pragmas(dbapi_connection: Any, wal: bool = True) -> None:
    """On a new DB-API connection: the busy timeout; with `wal`, WAL and ``synchronous = NORMAL`` (a commit
    without an fsync: a power cut may lose the last commits, never corrupt the file). Read-only connections pass
    ``wal=False`` and leave the journal mode as the writer set it."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if wal:
            enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def read_only_mode(path: Path) -> str:
    """The SQLite URI parameters that read `path` without writing anything: ``mode=ro``; for a WAL-mode file (file
    format byte 2) in a folder this process cannot write (a read-only install), also ``immutable=1``, since a WAL
    reader must otherwise create the -shm file (its last writer checkpointed: no -wal file is left to read)."""
    with path.open("rb") as handle:
        handle.seek(18)
        wal = handle.read(1) == b"\x02"
    if wal and not os.access(path.parent, os.W_OK) and not path.with_name(path.name + "-wal").exists():
        return "mode=ro&immutable=1"
    return "mode=ro"
