"""One SQLite setup: the busy timeout and WAL on every writing connection, and reads that write nothing."""
from __future__ import annotations

import sqlite3

from common.sqlite import SQLITE_BUSY_TIMEOUT_MS, apply_pragmas, read_only_mode


def test_a_writing_connection_gets_wal_normal_sync_and_the_busy_timeout(tmp_path) -> None:
    connection = sqlite3.connect(tmp_path / "w.sqlite")
    apply_pragmas(connection)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == SQLITE_BUSY_TIMEOUT_MS
    connection.close()


def test_a_reader_keeps_the_journal_mode_and_a_wal_file_in_a_read_only_folder_is_immutable(tmp_path,
                                                                                            monkeypatch) -> None:
    path = tmp_path / "r.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    apply_pragmas(connection, wal=False)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert read_only_mode(path) == "mode=ro"
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()
    assert read_only_mode(path) == "mode=ro"  # its folder is writable
    monkeypatch.setattr("common.sqlite.os.access", lambda path, mode: False)
    assert read_only_mode(path) == "mode=ro&immutable=1"
