"""Stored block counts (multiply-adds, ops, elements written and read) for the roofline estimator.

Counting one block on the meta device takes ~13 ms; a search on a target without a full table looks up ~10 new
blocks per trial, so the counts of every block of the space at a resolution are computed once
(`python launch.py costs --resolution 224`) and shipped in ``data/block-counts.json.gz``. Counts do not depend on
the dtype (bytes are counted elements times the dtype's size). A file written by another torch version is ignored.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

__all__ = ["COUNTS_FILE", "Counts", "stored_counts", "store_counts"]

COUNTS_FILE = Path(__file__).resolve().parent / "data" / "block-counts.json.gz"
Counts = tuple[float, int, int, int]  # (multiply-adds, ops, elements written, input elements + parameters)
CountKey = tuple[str, tuple[int, int, int], int]  # (block key, input shape, batch)


def _torch_version() -> str:
    return torch.__version__.split("+")[0]  # CPU and CUDA builds count alike


def _read(path: Path) -> dict[CountKey, Counts]:
    try:
        with gzip.open(path, "rt") as handle:
            data = json.load(handle)
    except (OSError, ValueError):  # missing, unreadable or corrupt: count instead
        return {}
    if data.get("torch") != _torch_version():
        return {}
    return {(key, tuple(shape), batch): (flops, ops, written, read)
            for key, shape, batch, flops, ops, written, read in data["entries"]}


def stored_counts(path: Path | None = None) -> dict[CountKey, Counts]:
    """The counts in `path` (default `COUNTS_FILE`; read once per process); empty if there are none for this
    torch version."""
    return _read_once(path or COUNTS_FILE)


@functools.lru_cache(maxsize=4)
def _read_once(path: Path) -> dict[CountKey, Counts]:
    return _read(path)


def store_counts(keys: Iterable[CountKey], count: Callable[[CountKey], Counts], path: Path | None = None,
                 progress: Callable[[Iterable], Iterable] = lambda items: items) -> int:
    """Count the `keys` not yet in `path` (default `COUNTS_FILE`) with `count` and write the merged file
    atomically; returns how many were counted."""
    path = path or COUNTS_FILE
    entries = _read(path)
    missing = [k for k in dict.fromkeys(keys) if k not in entries]
    for key in progress(missing):
        entries[key] = count(key)
    rows = [[key, list(shape), batch, *counts] for (key, shape, batch), counts in sorted(entries.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
            zipped.write(json.dumps({"torch": _torch_version(), "entries": rows}, separators=(",", ":")).encode())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; this is a shipped, shared file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _read_once.cache_clear()
    return len(missing)
