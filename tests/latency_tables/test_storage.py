"""LatencyDB: key round trip, upsert, all-or-nothing writes, device claims, corrupt files, killed and concurrent
writers (real processes on one SQLite file)."""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event

import common.sqlite
from common.sqlite import SQLITE_BUSY_TIMEOUT_MS
from latency_tables import storage
from latency_tables.storage import (
    DeviceMismatchError, EntryKey, InvalidEntryError, LatencyDB, LatencyDBError, Measurement, default_db_path,
)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEVICE = "cpu:x86_64:test cpu:2 cores"


def entry(tag: str, index: int, device: str = DEVICE) -> tuple[EntryKey, Measurement]:
    """A deterministic entry; the writer processes below import this same function."""
    key = EntryKey(
        target="cpu", device=device, implementation="torch" if index % 2 else "triton", dtype="fp32", batch=1,
        block_key=json.dumps({"writer": tag, "index": index}, sort_keys=True), channels=32 + index % 7, height=14,
        width=14, torch_version="2.13.0", triton_version="3.7.1", cuda_version="none")
    median_ms = 1.0 + index / 1000
    measurement = Measurement(
        median_ms=median_ms, p20_ms=median_ms * 0.9, p80_ms=median_ms * 1.1, repeats=20 + index, threads=1,
        settings={"warmup": 5, "writer": tag}, measured_at=datetime(2025, 1, 1, tzinfo=timezone.utc)
        + timedelta(seconds=index))
    return key, measurement


def _unchecked_measurement(**fields: object) -> Measurement:
    """A Measurement that skips validation, to reach the database's own constraints."""
    _, valid = entry("x", 0)
    measurement = object.__new__(Measurement)
    for name in ("median_ms", "p20_ms", "p80_ms", "repeats", "threads", "settings", "measured_at"):
        object.__setattr__(measurement, name, fields.get(name, getattr(valid, name)))
    return measurement


def _integrity(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def db(tmp_path: Path):
    with LatencyDB(tmp_path / "table.sqlite") as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgresql"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a table lives: a sqlite file, or a database on a real PostgreSQL server (tests/postgres.py)."""
    return tmp_path / "table.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture(params=["on-conflict", "generic"])
def any_upsert_db(request: pytest.FixtureRequest, any_backend: str | Path):
    """A database (sqlite or PostgreSQL) using the dialect's INSERT ... ON CONFLICT, or the generic
    select-then-write fallback."""
    with LatencyDB(any_backend) as opened:
        opened._native_upsert = request.param == "on-conflict"
        yield opened


# ------------------------------------------------------------------------------------------- keys and values
def test_put_then_get_round_trips(db: LatencyDB) -> None:
    key, measurement = entry("a", 3)
    assert db.get(key) is None
    db.put(key, measurement)
    assert db.get(key) == measurement
    assert db.get(key).measured_at.tzinfo is not None
    assert db.count() == 1


def test_every_key_field_is_part_of_the_key(db: LatencyDB) -> None:
    key, measurement = entry("a", 1)
    db.put(key, measurement)
    variants = dict(target="other", implementation="triton", dtype="bf16", batch=2, block_key='{"other": 1}',
                    channels=99, height=7, width=28, torch_version="2.12.0", triton_version="3.6.0",
                    cuda_version="12.8")
    for name, value in variants.items():
        assert db.get(replace(key, **{name: value})) is None, name
    db.put(replace(key, torch_version="2.12.0"), replace(measurement, median_ms=5.0, p80_ms=6.0))
    assert db.get(key) == measurement
    assert db.get(replace(key, torch_version="2.12.0")).median_ms == 5.0
    assert db.count() == 2


def test_upsert_replaces_measurement(any_upsert_db: LatencyDB) -> None:
    db = any_upsert_db
    key, first = entry("a", 0)
    db.put(key, first)
    second = replace(first, median_ms=2.5, p20_ms=2.0, p80_ms=3.0, repeats=7, threads=2, settings={"new": True})
    db.put(key, second)
    assert db.get(key) == second
    assert db.count() == 1
    db.put_many([entry("a", 0), entry("a", 1)])
    assert db.get(key) == first and db.count() == 2


def test_get_many_queries_per_chunk_not_per_key(db: LatencyDB) -> None:
    items = [entry("a", i) for i in range(120)]
    db.put_many(items)
    selects: list[str] = []

    def count_selects(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(db._engine, "before_cursor_execute", count_selects)
    try:
        missing = entry("missing", 0)[0]
        found = db.get_many([key for key, _ in items] + [missing])
    finally:
        event.remove(db._engine, "before_cursor_execute", count_selects)
    assert found == dict(items)
    assert len(selects) == math.ceil(121 / storage._READ_CHUNK)


def test_entries_filters_and_devices(db: LatencyDB) -> None:
    items = [entry("a", i) for i in range(6)]
    db.put_many(items)
    other_target = replace(items[0][0], target="other", device="another device")
    db.put(other_target, items[0][1])
    assert db.entries(target="cpu") == items
    assert db.entries(target="cpu", implementation="torch") == [item for item in items if item[0].implementation
                                                                == "torch"]
    assert db.entries(dtype="bf16") == [] and len(db.entries(batch=1)) == 7
    assert db.devices("cpu") == {DEVICE} and db.devices("other") == {"another device"}
    assert db.devices("nothing") == set()


@pytest.mark.parametrize("fields, match", [
    ({"median_ms": float("nan")}, "median_ms"),
    ({"p20_ms": 5.0}, "p20_ms <= median_ms"),
    ({"repeats": 0}, "repeats"),
    ({"threads": -1}, "threads"),
    ({"settings": {"x": float("inf")}}, "settings"),
    ({"measured_at": datetime(2025, 1, 1)}, "timezone-aware"),
], ids=["nan-median", "p20-above-median", "zero-repeats", "negative-threads", "inf-in-settings", "naive-time"])
def test_invalid_measurement_is_rejected_on_construction(fields: dict, match: str) -> None:
    _, valid = entry("a", 0)
    with pytest.raises(InvalidEntryError, match=match):
        replace(valid, **fields)


@pytest.mark.parametrize("fields", [
    {"implementation": "cuda"}, {"dtype": "float32"}, {"batch": 0}, {"channels": True}, {"block_key": "{not json"},
    {"device": ""},
], ids=["implementation", "dtype", "batch", "bool-channels", "block-key", "empty-device"])
def test_invalid_key_is_rejected_on_construction(fields: dict) -> None:
    key, _ = entry("a", 0)
    with pytest.raises(InvalidEntryError):
        replace(key, **fields)


# ------------------------------------------------------------------------------------------ transactions
@pytest.mark.parametrize("bad", [{"median_ms": float("nan")}, {"p20_ms": 9.0}], ids=["nan-median", "p20-above"])
def test_put_many_is_all_or_nothing(any_upsert_db: LatencyDB, monkeypatch: pytest.MonkeyPatch, bad: dict) -> None:
    db = any_upsert_db
    existing_key, existing = entry("a", 0)
    db.put(existing_key, existing)
    monkeypatch.setattr(storage, "_WRITE_CHUNK", 2)  # several INSERT statements, the failing one last
    batch = [entry("a", 0)[0], *[entry("b", i)[0] for i in range(4)]]
    items = [(key, replace(existing, median_ms=7.0, p80_ms=8.0)) for key in batch]
    items.append((entry("b", 9)[0], _unchecked_measurement(**bad)))  # violates NOT NULL / CHECK in the database
    with pytest.raises(LatencyDBError, match="rolled back.*violates a constraint"):
        db.put_many(items)
    assert db.count() == 1
    assert db.get(existing_key) == existing  # the upsert of the existing key was rolled back too
    assert db.claimed_device("cpu") == DEVICE


def test_put_many_error_before_writing_stores_nothing(db: LatencyDB) -> None:
    items = [entry("a", i) for i in range(3)]
    with pytest.raises(InvalidEntryError):
        db.put_many([*items, ("not a key", items[0][1])])  # type: ignore[list-item]
    assert db.count() == 0


# ------------------------------------------------------------------------------------------------ devices
def test_mixing_devices_raises(db: LatencyDB) -> None:
    db.put(*entry("a", 0))
    assert db.claimed_device("cpu") == DEVICE
    with pytest.raises(DeviceMismatchError) as info:
        db.put_many([entry("a", 1), entry("a", 2, device="cpu:aarch64:other cpu:64 cores")])
    message = str(info.value)
    assert DEVICE in message and "cpu:aarch64:other cpu:64 cores" in message and "--latency-db" in message
    assert isinstance(info.value, LatencyDBError)
    assert db.count() == 1  # nothing of the mixed batch was stored
    with pytest.raises(DeviceMismatchError):
        db.claim_device("cpu", "cpu:aarch64:other cpu:64 cores")
    db.claim_device("cpu", DEVICE)  # the same device again is fine
    db.claim_device("h100", "NVIDIA H100 80GB HBM3")  # another target in the same file has its own device
    assert db.claimed_device("h100") == "NVIDIA H100 80GB HBM3"


def test_device_claim_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    with LatencyDB(path) as first:
        first.claim_device("cpu", DEVICE)
    with LatencyDB(f"sqlite:///{path}") as second:  # a URL and a plain path name the same file
        with pytest.raises(DeviceMismatchError):
            second.put(*entry("a", 0, device="another"))
        assert second.count() == 0


# ------------------------------------------------------------------------------------------ opening files
@pytest.mark.parametrize("content", [
    os.urandom(4096),
    b"block,median_ms\nconv,1.0\n" * 50,
    b"SQLite format 3\x00" + b"\xff" * 4080,
], ids=["random-bytes", "text", "sqlite-header-then-garbage"])
def test_corrupt_file_raises_and_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LatencyDBError) as info:
        LatencyDB(path)
    assert str(path) in str(info.value) and "--latency-db" in str(info.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal / -shm / -journal created


def test_an_empty_file_is_a_new_table_and_a_missing_folder_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with LatencyDB(empty) as db:
        db.put(*entry("a", 0))
    with pytest.raises(LatencyDBError, match=r"the folder .*new/dir does not exist; create it first"):
        LatencyDB(tmp_path / "new" / "dir" / "t.sqlite")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_a_read_only_open_reads_and_writes_nothing(tmp_path: Path, monkeypatch, journal: str) -> None:
    """The shipped table inside a read-only install: read through SQLite's mode=ro, no -wal/-shm beside it (a
    WAL-mode file in a folder this process cannot write is read as immutable)."""
    path = tmp_path / "t.sqlite"
    with LatencyDB(path) as db:
        db.put(*entry("a", 0))
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode = {journal}")
    connection.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(common.sqlite.os, "access", lambda path, mode: False)  # as root, chmod cannot show it
    with LatencyDB(path, read_only=True) as reader:
        assert [key for key, _ in reader.entries()] == [entry("a", 0)[0]]
        with pytest.raises(LatencyDBError, match="readonly database"):
            reader.put(*entry("b", 1))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(LatencyDBError, match="no latency table at .*missing.sqlite: measure one there first"):
        LatencyDB(tmp_path / "missing.sqlite", read_only=True)


def test_other_schema_version_raises(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    LatencyDB(path).close()
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE table_info SET value = '999' WHERE key = 'schema_version'")
    connection.close()
    with pytest.raises(LatencyDBError, match="schema version 999"):
        LatencyDB(path)


def test_closed_database_raises(tmp_path: Path) -> None:
    db = LatencyDB(tmp_path / "t.sqlite")
    db.close()
    db.close()
    with pytest.raises(LatencyDBError, match="closed"):
        db.count()


def test_sqlite_connection_settings(db: LatencyDB) -> None:
    with db._engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_default_db_path() -> None:
    path = default_db_path("h100")
    assert path == ROOT / "latency_tables" / "data" / "h100.sqlite"
    with pytest.raises(InvalidEntryError):
        default_db_path("../h100")


# ------------------------------------------------------------------------------------- writer processes
WRITER = """
import sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {here!r}]
from latency_tables.storage import LatencyDB
from test_storage import entry

db_path, tag, batches, per_batch, go_file = sys.argv[1:]
if go_file != "-":
    deadline = time.monotonic() + 60
    while not Path(go_file).exists():
        if time.monotonic() > deadline:
            sys.exit("no go signal")
        time.sleep(0.005)
with LatencyDB(db_path) as db:
    batch = 0
    while int(batches) < 0 or batch < int(batches):
        db.put_many([entry(tag, batch * int(per_batch) + i) for i in range(int(per_batch))])
        batch += 1
"""


@pytest.fixture
def spawn(tmp_path: Path):
    """Start writer processes; any still running at teardown are killed by their own PIDs."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), here=str(HERE)))
    started: list[subprocess.Popen] = []

    def start(*args: object) -> subprocess.Popen:
        log = open(tmp_path / f"writer-{len(started)}.log", "wb")
        proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=log, stderr=log, cwd=tmp_path)
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _log(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("writer-*.log")))


def _integrity_ok(where: str | Path) -> bool:
    """sqlite's own integrity check for a file; a PostgreSQL server checks its own pages."""
    return isinstance(where, str) or _integrity(where) == "ok"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_writer_loses_only_its_open_transaction(tmp_path: Path, spawn, any_backend) -> None:
    path = any_backend
    LatencyDB(path).close()
    per_batch = 3
    proc = spawn(path, "k", -1, per_batch, "-")
    deadline = time.monotonic() + 30
    with LatencyDB(path) as reader:
        while (seen := reader.count()) < 60:
            assert proc.poll() is None, f"writer exited early:\n{_log(tmp_path)}"
            assert time.monotonic() < deadline, f"writer too slow ({seen} entries):\n{_log(tmp_path)}"
            time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    with LatencyDB(path) as reopened:
        stored = reopened.entries()
    assert len(stored) >= seen
    assert len(stored) % per_batch == 0  # whole transactions only
    assert stored == [entry("k", i) for i in range(len(stored))]
    assert _integrity_ok(path)


def test_two_concurrent_writers_store_everything(tmp_path: Path, spawn, any_backend) -> None:
    path = any_backend  # its table created by the writers themselves, at the same moment
    go = tmp_path / "go"
    writers = [spawn(path, "w0", 200, 1, go), spawn(path, "w1", 100, 2, go)]
    time.sleep(0.3)  # let both reach the barrier
    go.touch()
    for proc in writers:
        assert proc.wait(timeout=60) == 0, _log(tmp_path)
    with LatencyDB(path) as db:
        assert db.count() == 400
        expected = dict([entry("w0", i) for i in range(200)] + [entry("w1", i) for i in range(200)])
        assert db.get_many(expected) == expected
    assert _integrity_ok(path)
