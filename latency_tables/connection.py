"""Opening a latency database: its URL, the read-only check of an existing SQLite file, each connection's setup.

`latency_tables.storage.LatencyDB` opens its engine with these; they know nothing of the table's rows.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from common.errors import UserFacingError
from common.sqlite import SQLITE_BUSY_TIMEOUT_MS, apply_pragmas, read_only_mode
from latency_tables.schema import LatencyEntryRow

logger = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # primary result codes of sqlite3_errcode()
BEGIN_OPTION = "latency_tables_begin"  # execution option carrying the SQLite BEGIN statement of a session


class LatencyDBError(UserFacingError, RuntimeError):
    """The latency database cannot be opened, read or written; the message names it and what to do."""


def to_url(url_or_path: str | Path) -> URL:
    """A SQLAlchemy URL from a URL string or a plain filesystem path (turned into ``sqlite:///<absolute path>``)."""
    if isinstance(url_or_path, URL):
        return url_or_path
    if isinstance(url_or_path, str) and "://" in url_or_path:
        try:
            return make_url(url_or_path)
        except ArgumentError as exc:
            raise LatencyDBError(f"latency database URL {url_or_path!r} is not a valid SQLAlchemy URL: {exc}") from None
    path = Path(url_or_path).expanduser().resolve()
    return URL.create("sqlite", database=str(path))


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-backed SQLite URL, None for other back ends and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def check_existing_sqlite_file(path: Path, shown: str) -> None:
    """Raise `LatencyDBError` if ``path`` exists, is non-empty and is not a readable SQLite database.

    Reads only: the header, then the schema through a read-only connection, so a foreign or corrupt file is left
    byte-for-byte as it was (no DDL, no journal-mode change, no -wal/-shm files created next to it).
    """
    if path.exists() and not path.is_file():
        raise LatencyDBError(f"latency database {shown}: {path} is not a regular file; pass another --latency-db")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise LatencyDBError(f"latency database {shown}: cannot read {path}: {exc}") from None
    if header != SQLITE_HEADER:
        raise LatencyDBError(
            f"latency database {shown}: {path} is not an SQLite database (its first bytes are {header[:16]!r}); "
            f"it was left untouched. Move it away or pass another --latency-db.")
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?{read_only_mode(path)}", uri=True,
                                     timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            # Not a verdict on the file's content (e.g. busy, cannot open read-only): let the normal open report it.
            logger.debug("read-only check of %s inconclusive: %s", path, exc)
            return
        raise LatencyDBError(
            f"latency database {shown}: {path} is a damaged SQLite database ({exc}); it was left untouched. "
            f"Move it away (and re-measure) or pass another --latency-db.") from None
    if {"studies", "trials"} <= tables and LatencyEntryRow.__tablename__ not in tables:
        raise LatencyDBError(f"{path} is an Optuna study storage, not a latency table; pass another --latency-db "
                             f"(it was left untouched)")


def configure_sqlite(engine: Engine, wal: bool = True) -> None:
    """WAL, busy timeout and NORMAL sync on every connection; SQLAlchemy (not pysqlite) emits BEGIN.

    pysqlite's own transaction handling begins transactions lazily, so a read-then-write transaction can fail with
    "database is locked" without waiting for the busy timeout. Disabling it and emitting BEGIN from the ``begin``
    event (the recipe of SQLAlchemy's SQLite dialect documentation) lets write sessions use ``BEGIN IMMEDIATE``,
    which takes the write lock up front and waits for it.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        apply_pragmas(dbapi_connection, wal)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def hint(exc: DBAPIError) -> str:
    """What a user can do about a driver error."""
    text = str(exc.orig).lower()
    if isinstance(exc, IntegrityError):
        return "A value violates a constraint of the table (NaN or negative latency, p20 > median > p80?)."
    if "locked" in text or "busy" in text:
        return (f"Another process held the database longer than the {SQLITE_BUSY_TIMEOUT_MS / 1000:.0f} s busy "
                f"timeout; retry, or write to a separate --latency-db.")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return "The file is damaged: move it away and re-measure, or pass another --latency-db."
    return "Check that the database is reachable and writable, or pass another --latency-db."
