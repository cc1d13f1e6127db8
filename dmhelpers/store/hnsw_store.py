"""The hnswlib backend of :class:`~dmhelpers.VectorStore`: an hnswlib index plus texts, ids and metadata, persisted
in one folder (any ``path`` that is not a ``.db`` file or a Milvus URI).

Layout of a store folder::

    STORE                 pointer {"format": 1, "version": n, "snapshot": "v00000n"}, replaced atomically
    v00000n/meta.json     embedder name, dimension and probe vector, index parameters, count, corpus fingerprint
    v00000n/records.jsonl one {"id", "text", "metadata"} per chunk
    v00000n/embeddings.npy the chunks' normalised vectors (float32)
    v00000n/index.bin     the hnswlib graph (cosine)
    .lock                 held while a process writes

A write builds a complete new snapshot folder, reads it back as a reader will, and only then switches the
pointer, so a crash at any moment leaves the store holding exactly the last completed write. A write that fails
(a full disk, a file-size limit, a read-only folder) removes its unfinished snapshot and raises a
:class:`StoreError` saying the store is unchanged. Old snapshots are removed once no reader is loading them;
nothing in the folder that the store did not write is ever removed (:mod:`~dmhelpers.store.snapshots`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
from filelock import FileLock, Timeout

from dmhelpers.deep_memory.repository import FolderModels
from dmhelpers.embeddings import Embedder, LocalEmbeddings, get_embedding
from dmhelpers.store.records import Hit, corpus_fingerprint
from dmhelpers.store.snapshots import (FORMAT, cause, check_meta, count_records, damaged_version, index_params,
                                       load_snapshot, open_current, read_pointer, remove_stale, short_write_errno,
                                       write_records)
from dmhelpers.store.vector_store import POINTER, VectorStore
from dmhelpers.utils.errors import InputError, StoreError, StoreLockedError, check_whole
from dmhelpers.utils.files import atomic_write_json, fsync_dir


class HnswlibStore(VectorStore):
    """A persisted vector store over an hnswlib index (cosine similarity), in one folder.

    Args:
        path: the store folder (created on the first write).
        embedding: the embedder; ``None`` means the one the store was built with, or
            :class:`LocalEmbeddings` for a new store.
        overwrite: start empty; the old contents are replaced on the first write (not before, so a
            failed rebuild never loses the old store). A store whose ``STORE`` pointer or ``meta.json`` is
            damaged is replaced too (with ``embedding=None``, by :class:`LocalEmbeddings`).
        read_only: open for search only; nothing is ever written.
        M, ef_construction: hnswlib graph parameters, fixed when the index is built.
        ef: hnswlib search breadth (higher is more exact and slower); raised to ``k`` when needed.
        random_seed: hnswlib's seed, so a rebuild gives the same graph.
    """

    backend = "hnswlib"

    def __init__(self, path: str | Path, embedding: Embedder | None = None, overwrite: bool = False,
                 read_only: bool = False, M: int = 16, ef_construction: int = 200, ef: int = 100,
                 random_seed: int = 0, **milvus_only: Any) -> None:
        if milvus_only:
            raise InputError(f"{', '.join(f'{k}=' for k in milvus_only)} only apply to Milvus stores, and {str(path)!r} "
                             "is a folder (hnswlib). Pass a path ending in .db or an http(s):// URI for Milvus, or drop "
                             "the argument.")
        if overwrite and read_only:
            raise InputError("overwrite=True and read_only=True contradict each other; choose one.")
        self.path = Path(path)
        self.read_only = read_only
        self.params = index_params(M, ef_construction, random_seed)
        self.ef = check_whole("ef", ef, 1, "candidates", "Use e.g. ef=100 (higher is more exact and slower).", 100_000)
        self.version = 0
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metadatas: list[dict[str, Any]] = []
        self._vectors: np.ndarray | None = None
        self._index: hnswlib.Index | None = None
        self._id_set: set[str] = set()
        read: list[bool] = []  # whether the pointer and meta were read (so what failed was loading the store)

        def load(current: tuple[dict[str, Any], dict[str, Any]] | None) -> dict[str, Any] | None:
            read.append(True)
            return self._open(current, embedding, overwrite)

        try:
            on_disk = open_current(self.path, load)
        except StoreError:
            if not overwrite or read:
                raise
            # A damaged pointer or meta is a store to be replaced (every "damaged" message suggests overwrite=True):
            # the new snapshot is numbered above it, and it is removed only if it is recognisably the store's own.
            self.version = damaged_version(self.path)
            self.embedding = embedding if embedding is not None else LocalEmbeddings()
            on_disk = {"damaged": True}  # not None: there is a store to replace on the first write
        if read_only and on_disk is None:
            raise StoreError(f"No store at {self.path}: read_only=True needs an existing store. "
                             "Build one first with notebook 01, or check STORE_PATH.")
        if on_disk is None:
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path} is a file, not a store folder. Choose another STORE_PATH.")
            # The lock and snapshot folders a crash in the very first write leaves behind are the store's own.
            ours = re.compile(rf"\.lock|(\.tmp-|\.old-)?v\d{{6}}|\.{POINTER}\.\w+\.tmp").fullmatch
            if self.path.is_dir() and not all(ours(p.name) for p in self.path.iterdir()) and not overwrite:
                raise StoreError(f"{self.path} is a folder that holds other files but no store. Choose an empty "
                                 "or new folder for STORE_PATH, or pass overwrite=True to build the store there "
                                 "anyway (the other files are left as they are).")
            self.embedding = embedding if embedding is not None else LocalEmbeddings()
        self._overwrite_pending = overwrite and on_disk is not None

    def _open(self, current: tuple[dict[str, Any], dict[str, Any]] | None, embedding: Embedder | None,
              overwrite: bool) -> dict[str, Any] | None:
        """Check and load the pinned snapshot ``current`` (pointer, meta); returns the pointer."""
        if current is None:
            return None
        pointer, meta = current
        self.version = pointer["version"]
        self.embedding = embedding if embedding is not None else get_embedding(meta["embedding"])
        if not overwrite:
            self._check_embedder(meta["embedding"], meta["dimension"], meta.get("probe"))
            self.params = meta["index"]
            loaded = load_snapshot(self.path, pointer["snapshot"], meta)
            records = loaded.records
            self._ids = [r["id"] for r in records]
            self._texts = [r["text"] for r in records]
            self._metadatas = [r["metadata"] for r in records]
            self._id_set = set(self._ids)
            self._vectors, self._index = loaded.vectors, loaded.index
        return pointer

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def texts(self) -> list[str]:
        return list(self._texts)

    @property
    def metadatas(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._metadatas]

    @property
    def embeddings(self) -> np.ndarray:
        """The stored chunk vectors, shape ``(len(self), dimension)`` (read-only view)."""
        if self._vectors is None:
            return np.zeros((0, self.embedding.dimension), dtype=np.float32)
        view = self._vectors.view()
        view.flags.writeable = False
        return view

    @property
    def fingerprint(self) -> str:
        """A hash of the ids and texts: models trained on this corpus record it."""
        return corpus_fingerprint(self._ids, self._texts)

    def _read_pointer(self) -> dict[str, Any] | None:
        return read_pointer(self.path)

    @property
    def folder(self) -> Path:
        """The store folder itself: side files (``db.folder / "questions"``) live beside the snapshots."""
        return self.path

    @property
    def model_folder(self) -> Path:
        """Where Deep Memory keeps this store's training jobs and the active-model pointer."""
        return self.path / "deep_memory"

    @property
    def models(self) -> FolderModels:
        return FolderModels(self.model_folder)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Nearest chunks to each row of ``vectors`` (already embedded with this store's embedder)."""
        labels, scores = self.knn(vectors, k)
        return [[Hit(self._ids[j], self._texts[j], float(s), dict(self._metadatas[j])) for j, s in zip(row, srow)]
                for row, srow in zip(labels, scores)]

    def knn(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions and cosine similarities of the ``k`` nearest chunks to each vector."""
        if self._index is None:
            raise StoreError(f"The store at {self.path} is empty. Add texts first (notebook 01).")
        k = check_whole("k", k, 1, "chunks", "Use e.g. k=10.")
        k = min(int(k), len(self))
        self._index.set_ef(max(self.ef, k))
        labels, distances = self._index.knn_query(vectors, k=k)  # checked before hnswlib (VectorStore wraps knn)
        return labels.astype(np.int64), 1.0 - distances

    def _dimension(self) -> int:
        return int(self._vectors.shape[1]) if self._vectors is not None else super()._dimension()

    # ------------------------------------------------------------------ writing
    def _existing_ids(self, texts: list[str], ids: Sequence[str] | None) -> set[str]:
        return set() if self._overwrite_pending else self._id_set

    def _commit(self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str], vectors: np.ndarray) -> None:
        """Write the current contents plus the new rows as a new snapshot, then switch the pointer."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the store folder {self.path} ({exc}). Choose a STORE_PATH you can "
                             "write to.") from exc
        lock = FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout as exc:
            raise StoreLockedError(f"The store at {self.path} is locked: another process is writing to it. Wait "
                                   "for it to finish, or use another STORE_PATH.") from exc
        except OSError as exc:  # a read-only folder, or one this user may not write to
            what, fix = cause(exc, self.path)
            raise StoreError(f"Cannot write to the store at {self.path} ({what}). The store is unchanged. "
                             f"{fix}") from exc
        try:
            try:
                on_disk = self._read_pointer()
                disk_version = on_disk["version"] if on_disk else 0
            except StoreError:
                if not self._overwrite_pending:
                    raise
                on_disk, disk_version = None, damaged_version(self.path)  # a damaged store, being replaced
            if disk_version != self.version:
                raise StoreError(f"The store at {self.path} changed on disk since it was opened (another process "
                                 "wrote to it). Reopen it and add again.")
            keep = 0 if self._overwrite_pending else len(self)
            all_ids = self._ids[:keep] + ids
            all_texts = self._texts[:keep] + texts
            all_metas = self._metadatas[:keep] + metadatas
            base = self._vectors[:keep] if self._vectors is not None and keep else np.zeros((0, vectors.shape[1]), np.float32)
            all_vectors = np.concatenate([base, vectors.astype(np.float32)])
            index = self._build_index(all_vectors, keep, on_disk and on_disk["snapshot"])
            version = max(disk_version, self.version) + 1
            snapshot = f"v{version:06d}"
            try:
                self._write_snapshot(snapshot, all_ids, all_texts, all_metas, all_vectors, index)
                atomic_write_json(self.path / POINTER, {"format": FORMAT, "version": version, "snapshot": snapshot})
            except OSError as exc:
                shutil.rmtree(self.path / snapshot, ignore_errors=True)  # finished but never pointed to
                what, fix = cause(exc, self.path)
                raise StoreError(
                    f"Writing the store at {self.path} failed ({what}). The store is unchanged: it still holds its "
                    f"{len(self)} chunks, and the unfinished snapshot was removed. {fix}") from exc
            fsync_dir(self.path)
            self.version = version
            remove_stale(self.path, snapshot)
        finally:
            lock.release()
        self._ids, self._texts, self._metadatas = all_ids, all_texts, all_metas
        self._id_set, self._vectors, self._index = set(all_ids), all_vectors, index
        self._overwrite_pending = False

    def _build_index(self, all_vectors: np.ndarray, keep: int, snapshot: str | None) -> hnswlib.Index:
        """Extend a fresh copy of the saved graph (so a failure leaves the loaded one intact), or build anew."""
        index = hnswlib.Index(space="cosine", dim=all_vectors.shape[1])
        if keep and snapshot:
            index.load_index(str(self.path / snapshot / "index.bin"), max_elements=len(all_vectors))
        else:
            index.init_index(max_elements=len(all_vectors), **self.params)
        index.set_num_threads(1)  # one thread: the same inputs always give the same graph
        index.add_items(all_vectors[keep:], np.arange(keep, len(all_vectors)))
        index.set_num_threads(os.cpu_count() or 1)  # batched queries use every core, as on a reopened store
        return index

    def _write_snapshot(self, snapshot: str, ids: list[str], texts: list[str], metas: list[dict[str, Any]],
                        vectors: np.ndarray, index: hnswlib.Index) -> None:
        tmp = self.path / f".tmp-{snapshot}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            write_records(tmp / "records.jsonl", ids, texts, metas)
            np.save(tmp / "embeddings.npy", vectors, allow_pickle=False)
            index.save_index(str(tmp / "index.bin"))
            written, size = (tmp / "index.bin").stat().st_size, index.index_file_size()
            if written != size:  # hnswlib does not report a failed write: check its size
                code = short_write_errno(tmp, size - written)
                raise OSError(code, os.strerror(code), f"index.bin: {written} of {size} bytes written")
            meta = {"format": FORMAT, "embedding": self.embedding.name, "dimension": int(vectors.shape[1]),
                    "count": len(ids), "index": self.params, "fingerprint": corpus_fingerprint(ids, texts)}
            probe = self._probe()
            if probe is not None:
                meta["probe"] = probe
            atomic_write_json(tmp / "meta.json", meta)
            fsync_dir(tmp)
            self._read_back(tmp, ids, meta)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, ValueError):  # what the reader could not read is never committed
                raise StoreError(f"Writing the store at {self.path} failed: the new snapshot would not read back "
                                 f"({exc}). The store is unchanged: it still holds its {len(self)} chunks. Report "
                                 "this as a bug, with the texts and metadata that were added.") from exc
            raise
        shutil.rmtree(self.path / snapshot, ignore_errors=True)  # left by a crash after a rename, never current
        tmp.rename(self.path / snapshot)

    def _read_back(self, tmp: Path, ids: list[str], meta: dict[str, Any]) -> None:
        """Check the new snapshot reads back as a reader will read it, before anything points to it."""
        # Each ValueError says only what failed to read back: the store itself is not damaged, so no rebuild hint.
        rows = count_records(tmp / "records.jsonl")
        if rows != len(ids):
            raise ValueError(f"records.jsonl reads as {rows} records, not {len(ids)}")
        try:
            back = json.loads((tmp / "meta.json").read_text("utf-8"))
        except ValueError as exc:  # not JSON, or not UTF-8
            raise ValueError(f"meta.json does not read back as JSON ({exc})") from exc
        problem = check_meta(back)
        if problem or back != meta:
            raise ValueError(f"meta.json reads back {f'as not valid ({problem})' if problem else 'changed'}")
        stored = np.load(tmp / "embeddings.npy", mmap_mode="r")  # the header only
        shape = stored.shape
        del stored
        if shape != (len(ids), meta["dimension"]):
            raise ValueError(f"embeddings.npy reads back with shape {shape}, not {(len(ids), meta['dimension'])}")
