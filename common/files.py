"""Writes that never leave a half-written file or folder behind: temporary sibling, then rename."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ensure_folder", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "replace_dir_atomic"]


def ensure_folder(path: Path) -> None:
    """Create the folder `path` and its parents; `OSError` (its ``strerror`` one line) unless it then is a folder
    this process can write in."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(path)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable", str(path))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path` (made 0644), fsync it, then rename it over `path`: readers
    see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8), written atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """`payload` as indented JSON (no NaN or inf), written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def replace_dir_atomic(staging: Path, final: Path) -> None:
    """Move the finished folder `staging` to `final`, replacing an older `final` only once the new one is whole.

    Both must be on one filesystem (make `staging` a sibling of `final`). A crash leaves either the old folder or
    the new one at `final` (at worst the old one under a ``.old-`` name beside it), never a partial one.
    """
    final = Path(final)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
