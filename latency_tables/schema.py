"""The SQL tables of a latency table (SQLAlchemy 2 typed models) and the codec between their rows and
`EntryKey` / `Measurement`."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from sqlalchemy import CheckConstraint, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from latency_tables.entries import EntryKey, Measurement, canonical_json

__all__ = ["Base", "LatencyEntryRow", "TableInfoRow", "KEY_COLUMNS", "VALUE_COLUMNS", "SCHEMA_VERSION_KEY",
           "DEVICE_KEY_PREFIX", "row_values", "key_of", "measurement_of", "chunks"]


class Base(DeclarativeBase):
    pass


KEY_COLUMNS = ("target", "device", "implementation", "dtype", "batch", "block_key", "channels", "height", "width",
                "torch_version", "triton_version", "cuda_version")
VALUE_COLUMNS = ("threads", "settings", "median_ms", "p20_ms", "p80_ms", "repeats", "measured_at")


class LatencyEntryRow(Base):
    __tablename__ = "latency_entries"
    __table_args__ = (
        UniqueConstraint(*KEY_COLUMNS, name="uq_latency_entries_key"),
        Index("ix_latency_entries_lookup", "target", "implementation", "dtype", "batch"),
        # Defence in depth behind `Measurement`'s validation (NaN is stored as NULL by SQLite: NOT NULL rejects it).
        CheckConstraint("implementation IN ('triton', 'torch')", name="ck_latency_entries_implementation"),
        CheckConstraint("batch >= 1 AND channels >= 1 AND height >= 1 AND width >= 1",
                        name="ck_latency_entries_shape"),
        CheckConstraint("p20_ms >= 0 AND p20_ms <= median_ms AND median_ms <= p80_ms",
                        name="ck_latency_entries_order"),
        CheckConstraint("repeats >= 1 AND threads >= 0", name="ck_latency_entries_counts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(256))
    implementation: Mapped[str] = mapped_column(String(16))
    dtype: Mapped[str] = mapped_column(String(16))
    batch: Mapped[int] = mapped_column(Integer)
    block_key: Mapped[str] = mapped_column(Text)
    channels: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    torch_version: Mapped[str] = mapped_column(String(64))
    triton_version: Mapped[str] = mapped_column(String(64))
    cuda_version: Mapped[str] = mapped_column(String(64))
    threads: Mapped[int] = mapped_column(Integer)
    settings: Mapped[str] = mapped_column(Text)
    median_ms: Mapped[float] = mapped_column(Float)
    p20_ms: Mapped[float] = mapped_column(Float)
    p80_ms: Mapped[float] = mapped_column(Float)
    repeats: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TableInfoRow(Base):
    __tablename__ = "table_info"

    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


SCHEMA_VERSION_KEY = "schema_version"
DEVICE_KEY_PREFIX = "device:"  # "device:<target>" -> device string of that target's entries


def row_values(key: EntryKey, measurement: Measurement) -> dict[str, Any]:
    values = {name: getattr(key, name) for name in KEY_COLUMNS}
    values.update(
        threads=measurement.threads, settings=canonical_json(measurement.settings), median_ms=measurement.median_ms,
        p20_ms=measurement.p20_ms, p80_ms=measurement.p80_ms, repeats=measurement.repeats,
        measured_at=measurement.measured_at,
    )
    return values


def key_of(row: Any) -> EntryKey:
    return EntryKey(**{name: getattr(row, name) for name in KEY_COLUMNS})


def measurement_of(row: Any) -> Measurement:
    measured_at = row.measured_at
    if measured_at.tzinfo is None:  # SQLite keeps no offset; values are written in UTC
        measured_at = measured_at.replace(tzinfo=timezone.utc)
    return Measurement(median_ms=row.median_ms, p20_ms=row.p20_ms, p80_ms=row.p80_ms, repeats=row.repeats,
                       threads=row.threads, settings=json.loads(row.settings), measured_at=measured_at)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
