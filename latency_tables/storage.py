"""Storage of measured block latencies: SQLAlchemy 2 typed models behind a small `LatencyDB` API.

One row of ``latency_entries`` is one block measured at one input shape on one device with one software stack;
the columns of `EntryKey` are a unique constraint, and writing a key again replaces its measurement (upsert).
``table_info`` holds key/value facts about the file: the schema version and, per target, the device string the
target's entries were measured on (`LatencyDB.claim_device`), so entries from two devices are never mixed.

Every database access goes through `LatencyDB._session`, which commits or rolls back as one transaction and turns
driver errors into `LatencyDBError` naming the database. For SQLite files:

* an existing non-empty file is checked read-only (header, then the schema) before anything writes to it, so a
  file that is not an SQLite database raises `LatencyDBError` and is left byte-for-byte untouched;
* every connection uses WAL, ``synchronous=NORMAL`` and the busy timeout of `common.sqlite`, and write
  transactions start with ``BEGIN IMMEDIATE``; together these let several processes write one table at once
  without "database is locked" failures, and a writer killed mid-way loses at most its uncommitted transaction.
"""
from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import create_engine, func, select, text, tuple_
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session

from common.sqlite import SQLITE_BUSY_TIMEOUT_MS, read_only_mode
from latency_tables.connection import (BEGIN_OPTION, LatencyDBError, check_existing_sqlite_file, configure_sqlite, hint,
                                       sqlite_file, to_url)
from latency_tables.entries import IMPLEMENTATIONS, EntryKey, InvalidEntryError, Measurement, check_text, require
from latency_tables.schema import (DEVICE_KEY_PREFIX, KEY_COLUMNS, SCHEMA_VERSION_KEY, VALUE_COLUMNS, Base,
                                   LatencyEntryRow, TableInfoRow, chunks, key_of, measurement_of, row_values)

__all__ = [
    "SCHEMA_VERSION", "IMPLEMENTATIONS", "LatencyDBError", "DeviceMismatchError", "InvalidEntryError", "EntryKey",
    "Measurement", "LatencyDB", "default_db_path",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Rows per INSERT statement and keys per SELECT ... IN: 17 bound parameters a row stays far below SQLite's limit
# on bound variables (999 before 3.32).
_WRITE_CHUNK = 50
_READ_CHUNK = 50


class DeviceMismatchError(LatencyDBError):
    """Entries measured on one device would be mixed into a target's table measured on another."""


_SCHEMA_LOCK_KEY = 0x686E6173  # "hnas": the PostgreSQL advisory lock around creating the tables


# ------------------------------------------------------------------------------------------------------ the API
class LatencyDB:
    """Measured block latencies in any SQLAlchemy database (a plain path means an SQLite file).

    Tables are created when missing. Every call is one transaction: `put_many` stores all of its entries or none.
    Use as a context manager, or call `close`.
    """

    def __init__(self, url: str | Path, read_only: bool = False) -> None:
        """Open (with `read_only`: only read, never create) the table database at `url`. Read-only, a sqlite file
        must exist, and it is opened as SQLite's ``mode=ro``: nothing is written next to it (no -wal/-shm files),
        so a table inside a read-only install reads as well as any."""
        self._url = to_url(url)
        self._shown = self._url.render_as_string(hide_password=True)
        self._closed = True
        self.read_only = read_only
        sqlite_path = sqlite_file(self._url)
        engine_kwargs: dict[str, Any] = {}
        if sqlite_path is not None:
            check_existing_sqlite_file(sqlite_path, self._shown)
            if read_only and not sqlite_path.is_file():
                raise LatencyDBError(f"no latency table at {sqlite_path}: measure one there first (launch.py measure "
                                     f"--latency-db {sqlite_path}) or leave out --latency-db")
            if not sqlite_path.parent.is_dir():
                raise LatencyDBError(f"latency database {self._shown}: the folder {sqlite_path.parent} does not exist; "
                                     f"create it first (nothing was written)")
            if read_only:
                uri = f"{sqlite_path.resolve().as_uri()}?{read_only_mode(sqlite_path)}"
                engine_kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False,
                                                                   timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            self._engine = create_engine(self._url, **engine_kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise LatencyDBError(f"latency database {self._shown}: cannot create an engine: {exc}") from None
        # INSERT ... ON CONFLICT DO UPDATE where the dialect has it; otherwise select-then-update-or-insert.
        self._native_upsert = self._engine.dialect.name in ("sqlite", "postgresql")
        if self._engine.dialect.name == "sqlite":
            configure_sqlite(self._engine, wal=not read_only)
            self._write_engine = self._engine.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
        else:
            self._write_engine = self._engine
        self._closed = False
        try:
            if read_only:
                self._check_schema()
            else:
                self._create_schema()
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------------------------- plumbing
    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._shown

    @property
    def sqlite_path(self) -> Path | None:
        """The database file where this is a file-backed SQLite database, else None."""
        return sqlite_file(self._url)

    @property
    def writable_url(self) -> URL:
        """The database URL with its password, to open it again for writing."""
        return self._url

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error; driver errors become `LatencyDBError`."""
        if self._closed:
            raise LatencyDBError(f"latency database {self._shown} is closed")
        session = Session(self._write_engine if write else self._engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            self._rollback(session)
            raise LatencyDBError(
                f"latency database {self._shown}: {'write' if write else 'read'} failed and was rolled back: "
                f"{exc.orig!r}. {hint(exc)}") from exc
        except SQLAlchemyError as exc:
            self._rollback(session)
            raise LatencyDBError(f"latency database {self._shown}: {exc}") from exc
        except BaseException:
            self._rollback(session)
            raise
        finally:
            session.close()

    @staticmethod
    def _rollback(session: Session) -> None:
        try:
            session.rollback()
        except SQLAlchemyError:  # the connection is already broken; the original error is the one to report
            logger.debug("rollback failed", exc_info=True)

    def _check_schema(self) -> None:
        """Read-only open: the schema version must be this code's (a file without the tables is refused)."""
        try:
            with self._session() as session:
                stored = session.get(TableInfoRow, SCHEMA_VERSION_KEY)
        except LatencyDBError:
            raise LatencyDBError(f"latency database {self._shown} holds no latency table; measure one there first "
                                 f"(launch.py measure) or pass another --latency-db") from None
        if stored is None or stored.value != str(SCHEMA_VERSION):
            raise LatencyDBError(
                f"latency database {self._shown} has schema version {stored and stored.value}, this code reads "
                f"version {SCHEMA_VERSION}; re-measure into a new file (pass another --latency-db).")

    def _create_schema(self) -> None:
        # One write transaction (BEGIN IMMEDIATE on SQLite; on PostgreSQL, one holding a transaction-level advisory
        # lock): two processes opening a new table at once do not race between "table missing?" and CREATE TABLE.
        with self._session(write=True) as session:
            if self._engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            Base.metadata.create_all(session.connection())
            stored = session.get(TableInfoRow, SCHEMA_VERSION_KEY)
            if stored is None:
                session.add(TableInfoRow(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION)))
            elif stored.value != str(SCHEMA_VERSION):
                raise LatencyDBError(
                    f"latency database {self._shown} has schema version {stored.value}, this code reads version "
                    f"{SCHEMA_VERSION}; re-measure into a new file (pass another --latency-db).")

    def _upsert(self, session: Session, rows: list[dict[str, Any]]) -> None:
        table = LatencyEntryRow.__table__
        if self._native_upsert:
            if self._engine.dialect.name == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            for chunk in chunks(rows, _WRITE_CHUNK):
                statement = insert(table).values(list(chunk))
                statement = statement.on_conflict_do_update(
                    index_elements=list(KEY_COLUMNS),
                    set_={name: statement.excluded[name] for name in VALUE_COLUMNS})
                session.execute(statement)
            return
        # Generic fallback: update the keys that exist, insert the others, in the caller's transaction.
        existing = self._ids_of(session, [EntryKey(**{n: row[n] for n in KEY_COLUMNS}) for row in rows])
        for row in rows:
            row_id = existing.get(tuple(row[n] for n in KEY_COLUMNS))
            if row_id is None:
                session.add(LatencyEntryRow(**row))
            else:
                entry = session.get(LatencyEntryRow, row_id)
                for name in VALUE_COLUMNS:
                    setattr(entry, name, row[name])
            session.flush()

    def _ids_of(self, session: Session, keys: Sequence[EntryKey]) -> dict[tuple, int]:
        columns = [getattr(LatencyEntryRow, name) for name in KEY_COLUMNS]
        found: dict[tuple, int] = {}
        for chunk in chunks(keys, _READ_CHUNK):
            wanted = [tuple(getattr(key, name) for name in KEY_COLUMNS) for key in chunk]
            for row in session.execute(select(LatencyEntryRow.id, *columns).where(tuple_(*columns).in_(wanted))):
                found[tuple(getattr(row, name) for name in KEY_COLUMNS)] = row.id
        return found

    def _claim(self, session: Session, target: str, device: str) -> None:
        info_key = DEVICE_KEY_PREFIX + target
        stored = session.get(TableInfoRow, info_key)
        if stored is None:
            session.add(TableInfoRow(key=info_key, value=device))
            session.flush()
            logger.info("latency database %s: target %r is measured on %r", self._shown, target, device)
        elif stored.value != device:
            raise DeviceMismatchError(
                f"latency database {self._shown} holds target {target!r} entries measured on {stored.value!r}; "
                f"refusing to mix in entries from {device!r}. Use a separate --latency-db for that device.")

    # ----------------------------------------------------------------------------------------------- public
    def claim_device(self, target: str, device: str) -> None:
        """Record ``device`` as the device of ``target``'s entries, or raise `DeviceMismatchError` if another is.

        `put` and `put_many` claim the devices of their keys in their own transaction, so calling this is only
        needed to fail early (before measuring) on a table that belongs to another device.
        """
        check_text(target, "target")
        check_text(device, "device")
        with self._session(write=True) as session:
            self._claim(session, target, device)

    def claimed_device(self, target: str) -> str | None:
        """The device recorded for ``target``, or None if nothing was written for it yet."""
        with self._session() as session:
            stored = session.get(TableInfoRow, DEVICE_KEY_PREFIX + target)
            return None if stored is None else stored.value

    def get_info(self, key: str) -> str | None:
        """A table-level fact stored with `set_info` (e.g. a fitted correction), or None."""
        with self._session() as session:
            stored = session.get(TableInfoRow, key)
            return None if stored is None else stored.value

    def set_info(self, key: str, value: str) -> None:
        """Store a table-level fact in one transaction (replacing its previous value)."""
        if key == SCHEMA_VERSION_KEY or key.startswith(DEVICE_KEY_PREFIX):
            raise InvalidEntryError(f"table_info key {key!r} is reserved")
        with self._session(write=True) as session:
            stored = session.get(TableInfoRow, key)
            if stored is None:
                session.add(TableInfoRow(key=key, value=value))
            else:
                stored.value = value

    def get(self, key: EntryKey) -> Measurement | None:
        """The measurement stored under ``key``, or None."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[EntryKey]) -> dict[EntryKey, Measurement]:
        """The stored measurements of those of ``keys`` that have one (one query per 50 keys, one transaction)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        columns = [getattr(LatencyEntryRow, name) for name in KEY_COLUMNS]
        found: dict[EntryKey, Measurement] = {}
        with self._session() as session:
            for chunk in chunks(unique, _READ_CHUNK):
                wanted = [tuple(getattr(key, name) for name in KEY_COLUMNS) for key in chunk]
                for row in session.scalars(select(LatencyEntryRow).where(tuple_(*columns).in_(wanted))):
                    found[key_of(row)] = measurement_of(row)
        return found

    def put(self, key: EntryKey, measurement: Measurement) -> None:
        """Store ``measurement`` under ``key``, replacing an earlier one (one transaction)."""
        self.put_many([(key, measurement)])

    def put_many(self, items: Iterable[tuple[EntryKey, Measurement]]) -> None:
        """Store all ``(key, measurement)`` pairs in one transaction: all of them or, on any error, none.

        A key given twice keeps its last measurement. Raises `DeviceMismatchError` if a key's device differs from
        the device recorded for its target.
        """
        by_key: dict[EntryKey, Measurement] = {}
        for item in items:
            require(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], EntryKey)
                     and isinstance(item[1], Measurement),
                     f"put_many takes (EntryKey, Measurement) pairs, got {item!r}")
            by_key[item[0]] = item[1]
        if not by_key:
            return
        devices = {(key.target, key.device) for key in by_key}
        with self._session(write=True) as session:
            for target, device in sorted(devices):
                self._claim(session, target, device)
            self._upsert(session, [row_values(key, measurement) for key, measurement in by_key.items()])

    def entries(self, target: str | None = None, implementation: str | None = None, dtype: str | None = None,
                batch: int | None = None) -> list[tuple[EntryKey, Measurement]]:
        """All stored entries matching the given filters (None: any), in insertion order."""
        statement = select(LatencyEntryRow).order_by(LatencyEntryRow.id)
        for name, value in (("target", target), ("implementation", implementation), ("dtype", dtype),
                            ("batch", batch)):
            if value is not None:
                statement = statement.where(getattr(LatencyEntryRow, name) == value)
        with self._session() as session:
            return [(key_of(row), measurement_of(row)) for row in session.scalars(statement)]

    def devices(self, target: str) -> set[str]:
        """The distinct device strings of ``target``'s entries."""
        with self._session() as session:
            return set(session.scalars(select(LatencyEntryRow.device).where(LatencyEntryRow.target == target)
                                       .distinct()))

    def count(self) -> int:
        """The number of stored entries."""
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(LatencyEntryRow)) or 0)

    def close(self) -> None:
        """Release all connections; later calls raise `LatencyDBError`. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> LatencyDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LatencyDB({self._shown!r})"


def default_db_path(target_name: str) -> Path:
    """Where the table of ``target_name`` lives by default: ``latency_tables/data/<target>.sqlite``."""
    check_text(target_name, "target_name")
    require("/" not in target_name and "\\" not in target_name and not target_name.startswith("."),
             f"target_name must be a plain name, got {target_name!r}")
    return Path(__file__).resolve().parent / "data" / f"{target_name}.sqlite"
