"""Reading an hnswlib store folder's ``STORE`` pointer and snapshots, checked field by field, and removing only the
snapshots the store itself wrote (see :mod:`~dmhelpers.store.hnsw_store` for the layout).

A reader holds a shared lock (``flock``) on the snapshot's ``meta.json`` while it loads; a writer removes an old
snapshot only when it can take that lock exclusively, so a snapshot is never deleted under a reader. When the
pointer moves on between a reader's look at it and its lock, the reader looks again (:func:`open_current`).
"""
from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hnswlib
import numpy as np

from dmhelpers.store.vector_store import POINTER
from dmhelpers.utils.errors import InputError, StoreError, check_whole
from dmhelpers.utils.files import READ_ONLY

try:
    import fcntl
except ImportError:  # Windows has no flock: readers then rely on retrying alone
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
SNAPSHOT = re.compile(r"v\d{6}")
TRASH = ".old-"  # a snapshot being removed is first renamed to .old-v00000n, so a half-removed one is recognisable
REBUILD_HINT = "Rebuild it with notebook 01 (OVERWRITE = True) or VectorStore(path, overwrite=True)."
ATTEMPTS = 50  # looks at the pointer before a reader gives up on a store that keeps changing
T = TypeVar("T")


class Raced(Exception):
    """The snapshot a reader was opening was replaced and removed meanwhile: look at the pointer again."""


def index_params(M: Any, ef_construction: Any, random_seed: Any,  # noqa: N803 - hnswlib's name
                 bounded: bool = True) -> dict[str, int]:
    """hnswlib's build parameters, checked (hnswlib itself crashes on ``M=0`` and fails late on a huge ``M``).

    ``bounded=False`` checks only the type and the lower bound: for the parameters a stored snapshot records,
    which earlier versions accepted up to any size (hnswlib builds with ``M=128``), so they still open."""
    def high(limit: int) -> int | None:
        return limit if bounded else None

    return {"M": check_whole("M", M, 2, "links per node", "Use e.g. M=16 (useful values are 4 to 64).", high(100)),
            "ef_construction": check_whole("ef_construction", ef_construction, 1, "candidates",
                                           "Use e.g. ef_construction=200.", high(100_000)),
            "random_seed": check_whole("random_seed", random_seed, 0, "", "Use e.g. random_seed=0.",
                                       high(2**32 - 1))}


def read_pointer(folder: Path) -> dict[str, Any] | None:
    """The ``STORE`` pointer, or ``None`` when there is none; a :class:`StoreError` when it cannot be used."""
    pointer = folder / POINTER
    try:
        data = json.loads(pointer.read_text("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"The store at {folder} has an unreadable {POINTER} file ({exc}). {REBUILD_HINT}") from exc
    problem = None
    if not isinstance(data, dict):
        problem = f"it holds {type(data).__name__}, not an object"
    elif data.get("format") != FORMAT:
        problem = f"unknown format {data.get('format')!r}"
    elif isinstance(data.get("version"), bool) or not isinstance(data.get("version"), int) or data["version"] < 1:
        problem = f"no valid version: {data.get('version')!r}"
    elif not isinstance(data.get("snapshot"), str) or not SNAPSHOT.fullmatch(data["snapshot"]):
        problem = f"snapshot {data.get('snapshot')!r} is not a snapshot name of this folder (v and 6 digits)"
    if problem:
        raise StoreError(f"The store at {folder} has an unreadable {POINTER} file ({problem}). {REBUILD_HINT}")
    return data


def check_meta(meta: Any) -> str | None:
    """What is wrong with a ``meta.json``'s content, or ``None``."""
    if not isinstance(meta, dict):
        return f"it holds {type(meta).__name__}, not an object"
    if meta.get("format", FORMAT) != FORMAT:
        return f"unknown format {meta.get('format')!r}"
    if not isinstance(meta.get("embedding"), str) or not meta["embedding"]:
        return f"no embedder name: {meta.get('embedding')!r}"
    for key, low in (("dimension", 1), ("count", 0)):
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), int) or meta[key] < low:
            return f"no valid {key}: {meta.get(key)!r}"
    index = meta.get("index")
    if not isinstance(index, dict) or set(index) != {"M", "ef_construction", "random_seed"}:
        return f"no valid index parameters: {index!r}"
    try:
        index_params(**index, bounded=False)  # a store built with a large M or seed still opens
    except InputError:
        return f"no valid index parameters: {index!r}"
    probe = meta.get("probe")
    if probe is not None and not (isinstance(probe, list) and len(probe) == meta["dimension"] and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in probe)):
        return "its embedder probe is not a list of numbers of the store's dimension"
    return None


def read_meta(folder: Path, snapshot: str, meta_file: Any = None) -> dict[str, Any]:
    """A snapshot's ``meta.json`` (from the open ``meta_file`` if given), checked."""
    try:
        text = meta_file.read() if meta_file is not None else (folder / snapshot / "meta.json").read_text("utf-8")
        meta = json.loads(text)
    except (OSError, ValueError) as exc:
        raise StoreError(f"The store at {folder} is damaged: meta.json in {snapshot} cannot be read ({exc}). "
                         f"{REBUILD_HINT}") from exc
    problem = check_meta(meta)
    if problem:
        raise StoreError(f"The store at {folder} is damaged: meta.json in {snapshot} is not valid ({problem}). "
                         f"{REBUILD_HINT}")
    return meta


def write_records(path: Path, ids: list[str], texts: list[str], metas: list[dict[str, Any]]) -> None:
    """Write ``records.jsonl`` as :func:`read_records` reads it: one JSON object per line, none holding a ``"\\n"``
    (JSON escapes it inside strings; a line that held one anyway is a :class:`ValueError`, never written)."""
    with open(path, "w", encoding="utf-8") as f:
        for n, (i, t, m) in enumerate(zip(ids, texts, metas)):
            line = json.dumps({"id": i, "text": t, "metadata": m}, ensure_ascii=False)
            if "\n" in line:
                raise ValueError(f"record {n} would span two lines of records.jsonl")
            f.write(line + "\n")


def count_records(path: Path) -> int:
    """How many records :func:`read_records` finds in ``path``, by its rule (lines end at ``"\\n"``), unparsed."""
    data = path.read_bytes()
    return data.count(b"\n") + (not data.endswith(b"\n") and len(data) > 0)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``records.jsonl``: one JSON object per line, lines ended by ``"\\n"`` only (the writer's
    JSON escapes real newlines, but U+2028, U+0085, form feeds and the like stay inside strings as they are)."""
    lines = path.read_text("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    records = [json.loads(line) for line in lines]
    for n, r in enumerate(records):
        if not (isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("text"), str)
                and isinstance(r.get("metadata"), dict)):
            raise ValueError(f"record {n} of records.jsonl is not an object with a string id and text and a "
                             "metadata object")
    return records


@dataclass
class Snapshot:
    """What a snapshot folder holds, loaded."""

    records: list[dict[str, Any]]
    vectors: np.ndarray
    index: hnswlib.Index | None


def load_snapshot(folder: Path, snapshot: str, meta: dict[str, Any]) -> Snapshot:
    """Load and cross-check a snapshot's records, vectors and index against its ``meta.json``."""
    where, dim, count = folder / snapshot, meta["dimension"], meta["count"]
    damaged = f"The store at {folder} is damaged"
    try:
        records = read_records(where / "records.jsonl")
        try:
            vectors = np.load(where / "embeddings.npy", allow_pickle=False)
        except ValueError as exc:  # numpy's advice for a file that is not .npy is to allow pickles: never
            raise ValueError(f"embeddings.npy in {snapshot} is not a NumPy array file"
                             f"{'' if 'pickle' in str(exc) else f' ({exc})'}") from exc
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] != dim or \
                not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(vectors).all():
            raise ValueError(f"embeddings.npy in {snapshot} holds an array of shape {getattr(vectors, 'shape', '?')} "
                             f"and type {getattr(vectors, 'dtype', '?')}, not ({count}, {dim}) finite floats")
        index = None
        if records:
            if not (where / "index.bin").exists():
                raise FileNotFoundError(f"index.bin is missing from {snapshot}")
            index = hnswlib.Index(space="cosine", dim=dim)
            index.load_index(str(where / "index.bin"), max_elements=len(records))
    except (OSError, ValueError, RuntimeError) as exc:  # UnicodeDecodeError is a ValueError
        if isinstance(exc, FileNotFoundError) and not where.exists():
            raise Raced(snapshot) from exc
        raise StoreError(f"{damaged}: {exc}. {REBUILD_HINT}") from exc
    counts = {"records": len(records), "embeddings": len(vectors), "index": index.get_current_count() if index else 0}
    if len(set(counts.values())) != 1 or counts["records"] != count:
        raise StoreError(f"{damaged}: its files disagree ({counts}, meta says {count}). {REBUILD_HINT}")
    return Snapshot(records, vectors.astype(np.float32, copy=False), index)


@contextmanager
def pinned(folder: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]] | None]:
    """The current pointer and its snapshot's meta (``None`` when there is no store), with the snapshot held
    against removal until the block ends; :class:`Raced` when the pointer moved on meanwhile (see
    :func:`open_current`)."""
    pointer = read_pointer(folder)
    if pointer is None:
        yield None
        return
    snapshot = pointer["snapshot"]
    meta_path = folder / snapshot / "meta.json"
    try:
        f = open(meta_path, encoding="utf-8")
    except OSError as exc:  # missing, a folder, under a file, not readable
        if isinstance(exc, FileNotFoundError) and read_pointer(folder) != pointer:
            raise Raced(snapshot) from None  # replaced and removed since we looked
        raise StoreError(f"The store at {folder} is damaged: meta.json in {snapshot} cannot be read ({exc}). "
                         f"{REBUILD_HINT}") from exc
    with f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            except OSError:
                pass  # a file system without locks: retrying is all we have
        try:
            if os.stat(meta_path).st_ino != os.fstat(f.fileno()).st_ino:
                raise Raced(snapshot)
        except FileNotFoundError:
            raise Raced(snapshot) from None  # removed between our open and our lock
        yield pointer, read_meta(folder, snapshot, f)


def open_current(folder: Path, load: Callable[[tuple[dict[str, Any], dict[str, Any]] | None], T]) -> T:
    """``load(current)`` with the current pointer and meta pinned (see :func:`pinned`), looking at the pointer
    again when a writer replaced the snapshot meanwhile: a reader gets the last committed snapshot, never a
    "damaged" for a race."""
    for _ in range(ATTEMPTS):
        try:
            with pinned(folder) as current:
                return load(current)
        except Raced:
            continue
    raise StoreError(f"The store at {folder} changed {ATTEMPTS} times while it was being opened (another process "
                     "writes to it without pause). Open it again when that writer is done.")


def damaged_version(folder: Path) -> int:
    """The version of a store that cannot be opened (its pointer or meta is damaged) but is to be replaced
    (``overwrite=True``): the pointer's when it is readable, else the highest ``v`` + 6 digits name in the folder
    (0 for none), so the new snapshot's name is above every one there."""
    try:
        pointer = read_pointer(folder)
    except StoreError:
        pointer = None
    if pointer is not None:
        return pointer["version"]
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return 0
    return max((int(n[1:]) for n in names if SNAPSHOT.fullmatch(n)), default=0)


def owned_snapshot(path: Path) -> bool:
    """Whether ``path`` is a snapshot folder this store wrote: named ``v`` + 6 digits, with its ``meta.json``."""
    if not (SNAPSHOT.fullmatch(path.name) and path.is_dir()):
        return False
    try:
        return check_meta(json.loads((path / "meta.json").read_text("utf-8"))) is None
    except (OSError, ValueError):
        return False


def remove_stale(folder: Path, current: str) -> None:
    """Remove what earlier writes of this store left: snapshots other than ``current`` that no reader is loading,
    unfinished ``.tmp-v00000n`` folders and torn pointer files. Nothing else in the folder is touched."""
    for p in folder.iterdir():
        name = p.name
        if p.is_dir() and re.fullmatch(rf"(\.tmp-|{re.escape(TRASH)})v\d{{6}}", name):
            shutil.rmtree(p, ignore_errors=True)
        elif name != current and owned_snapshot(p):
            _remove_unless_read(p)
        elif p.is_file() and re.fullmatch(rf"\.{POINTER}\.\w+\.tmp", name):  # a torn pointer write
            p.unlink(missing_ok=True)


def _remove_unless_read(snapshot: Path) -> None:
    try:
        f = open(snapshot / "meta.json", encoding="utf-8")
    except OSError:
        return
    with f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # a reader is loading it: the next write removes it
        trash = snapshot.with_name(TRASH + snapshot.name)
        try:
            snapshot.rename(trash)
        except OSError:
            return
    shutil.rmtree(trash, ignore_errors=True)


def short_write_errno(folder: Path, missing: int = 0) -> int:
    """The likely errno of a write that stopped short without one: a full disk, else the file-size limit."""
    try:
        if shutil.disk_usage(folder).free < max(missing, 2**20):
            return errno.ENOSPC
    except OSError:
        pass
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    return errno.EIO


CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
          errno.EFBIG: "a file reached the file-size limit (ulimit -f)",
          errno.EROFS: "the store folder is on a read-only file system",
          errno.EACCES: "this user may not write to the store folder", errno.EPERM: "writing to the store folder "
          "is not permitted (read-only or immutable files)"}


def cause(exc: OSError, folder: Path) -> tuple[str, str]:
    """What an operating-system error on write most likely means, in words, and what to do about it."""
    code = exc.errno if exc.errno is not None else short_write_errno(folder)
    if code in READ_ONLY:
        fix = ("Open the store with read_only=True to search it, or make the folder writable (or copy the store to "
               "a folder you can write to), then add the texts again.")
    else:
        fix = "Free disk space or raise the limit, then add the texts again."
    what = f"{os.strerror(code)}: {CAUSES[code]}" if code in CAUSES else f"{exc.strerror or exc} ({type(exc).__name__})"
    return what, fix

