"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename over; and what a
failed write (a full disk, a read-only folder) means, in words."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dmhelpers.utils.errors import StoreError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON every record of this package is written in."""
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (:func:`json_text`), atomically."""
    atomic_write_text(path, json_text(obj))


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FULL = {errno.ENOSPC, errno.EDQUOT}
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def write_failure(exc: OSError, path: str | Path, unchanged: str, fix: str = "copy the store to a writable folder "
                  "and open it there") -> StoreError:
    """A :class:`StoreError` for a write to ``path`` that failed with ``exc`` (a full disk, a read-only folder or
    another OS error): the cause, what to do (``fix`` for a read-only folder), and ``unchanged``, what was kept."""
    path = Path(path)
    folder = next((p for p in path.parents if p.exists()), path.parent)
    if exc.errno in FULL:
        return StoreError(f"The disk is full: could not write {path} ({exc.strerror}). Free space on the disk (or "
                          f"move the folder to a disk with room) and try again; {unchanged}")
    if exc.errno in READ_ONLY:
        return StoreError(f"The folder {folder} is read-only: could not write {path} ({exc.strerror}). Make the "
                          f"folder writable, or {fix}; {unchanged}")
    return StoreError(f"Could not write {path} ({type(exc).__name__}: {exc}). Check the disk and the folder "
                      f"{folder}, and try again; {unchanged}")
