"""The Milvus backend of :class:`~dmhelpers.VectorStore`: a path ending in ``.db`` is Milvus Lite (embedded, one
process per file), an ``http(s)://`` URI a Milvus server or cluster (token from ``MILVUS_TOKEN``).

Layout in Milvus, for ``collection="docs"``::

    docs__g<n>   the chunks: id (VARCHAR primary key), seq (row position), text, metadata (JSON), vector
                 (FLOAT_VECTOR, HNSW index, COSINE); generation n changes only when the store is overwritten
    docs         an alias of the current generation, so other Milvus clients can search it by name
    docs__dm     the store's record, a writer lock and the Deep Memory models (see :mod:`.milvus_side`)

The record (count, fingerprint, version, generation) is the commit point, as the ``STORE`` pointer is for hnswlib:
rows are inserted first, then the record is replaced in one atomic upsert. Searches only see rows with
``seq < count``, so the rows of a write that failed half-way are never found, and the next write deletes them.
Overwriting builds a new generation and switches the record (and the alias) only when it is complete.

Deep Memory is applied in this process, to the question vectors, before Milvus searches; training reads the
corpus once and never rewrites the collection.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from dmhelpers.embeddings import Embedder, LocalEmbeddings, get_embedding
from dmhelpers.store.milvus_connection import REBUILD_HINT, Connection, check_lite_manifests, mask_uri, side_folder
from dmhelpers.store.milvus_schema import (TOP_K_LIMIT, check_limits, create_chunks, flush_quietly, generations,
                                          point_alias, stamp_version, stamped_version, undo_quietly)
from dmhelpers.store.milvus_side import LEASE_S, SUFFIX, MilvusModels, SideCollection, literal
from dmhelpers.store.records import Hit, corpus_fingerprint, text_id
from dmhelpers.store.vector_store import VectorStore
from dmhelpers.utils.errors import InputError, StoreError, check_whole

FORMAT = 1
INSERT_BYTES = 16 * 2**20  # rows per insert call are kept under this (gRPC messages are limited to 64 MiB)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,180}")
RECORD_KEYS = ("physical", "generation", "embedding", "dimension", "index", "count", "version", "fingerprint")


class MilvusStore(VectorStore):
    """A vector store in Milvus Lite (``path`` ends in ``.db``) or a Milvus server or cluster (``http(s)://``).

    Args beyond :class:`~dmhelpers.VectorStore`'s:
        collection: the collection's name (letters, digits, underscores); several stores can share a server.
        token: the server's token (``"user:password"`` or an API key); ``None`` reads ``MILVUS_TOKEN``.
        folder: the local folder for side files (:attr:`folder`); ``None`` is ``<file>.db.files/<collection>``
            for Milvus Lite and ``~/.cache/dmhelpers/milvus/<host>-<port>/<collection>`` for a server.
        consistency: Milvus's consistency level for searches; "Strong" sees every committed write at once.
        timeout: seconds to wait for the server on each call.
        random_seed: accepted so that calls work on both backends; Milvus builds its graph itself.
    """

    backend = "milvus"

    def __init__(self, path: str | Path, embedding: Embedder | None = None, overwrite: bool = False,
                 read_only: bool = False, M: int = 16, ef_construction: int = 200, ef: int = 100,
                 random_seed: int = 0, collection: str = "chunks", token: str | None = None,
                 folder: str | Path | None = None, consistency: str = "Strong", timeout: float = 30.0) -> None:
        if overwrite and read_only:
            raise InputError("overwrite=True and read_only=True contradict each other; choose one.")
        if not isinstance(collection, str) or not NAME.fullmatch(collection) or SUFFIX in collection:
            raise InputError(f"collection must be a name of letters, digits and underscores that starts with a letter "
                             f"(and does not contain {SUFFIX!r}), got {collection!r}. Use e.g. collection='docs'.")
        if consistency not in ("Strong", "Bounded", "Session", "Eventually"):
            raise InputError(f"consistency must be 'Strong', 'Bounded', 'Session' or 'Eventually', got {consistency!r}. "
                             "Use 'Strong' (the default) unless you know the trade-off (docs/milvus.md).")
        self.path, self.collection, self.read_only, self.ef = mask_uri(str(path)), collection, read_only, ef
        self.lite = not self.path.startswith(("http://", "https://"))
        self.uri = str(Path(self.path).expanduser().resolve()) if self.lite else str(path)  # path: no password
        self.where = f"{self.path} (collection {collection!r})"
        self._folder = Path(folder).expanduser() if folder is not None else side_folder(self.path, collection)
        self.params = {"M": M, "ef_construction": ef_construction}
        self.consistency = consistency
        self._rows: dict[str, list[Any]] = {}  # columns loaded so far (ids, texts, metadatas, vectors)
        if read_only and self.lite and not Path(self.uri).exists():
            raise StoreError(f"No store at {self.path}: read_only=True needs an existing store. Build one first "
                             "with notebook 01, or check STORE_PATH.")
        if self.lite and not read_only:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        if self.lite:  # before Milvus Lite opens the file: it would fall back to older manifests, and prune
            check_lite_manifests(Path(self.uri), self.path, collection)
        again = f"{self.path!r}" + (f", collection={collection!r}" if collection != "chunks" else "")
        self.connection = Connection(self.path, self.uri, self.lite,
                                     token if token is not None else os.environ.get("MILVUS_TOKEN", ""), timeout,
                                     closed=f"The store {self.where} is closed (db.close() let go of it). Open it "
                                            f"again with VectorStore({again}).")
        self.side = SideCollection(self.client, collection + SUFFIX, self._call)
        try:
            self._open(embedding, overwrite)
        except BaseException:
            self.close()  # a refused open holds nothing (for Milvus Lite: not the file)
            raise

    def _open(self, embedding: Embedder | None, overwrite: bool) -> None:
        """Read the store's record and check it against the arguments (no write). With ``overwrite``, a damaged
        record or a missing collection is no obstacle: the first write replaces them (see :meth:`_stand_in`)."""
        read_only, collection = self.read_only, self.collection
        self._record = record = self._read_record(overwrite)
        if record is not None and overwrite and not record.get("stand_in") and not self._call(
                "list collections", self.client.has_collection, record["physical"]):
            self._record = record = self._stand_in(record)
        if record is None:
            if read_only:
                raise StoreError(f"No store {self.where}: read_only=True needs an existing store. Build one first "
                                 "with notebook 01, or check STORE_PATH and collection=.")
            if self._call("list collections", self.client.has_collection, collection):
                raise StoreError(f"{self.where} already holds a collection {collection!r} that this package did "
                                 "not make (it has no record). Choose another collection= name, or drop that one.")
            self.embedding = embedding if embedding is not None else LocalEmbeddings()
        elif record.get("stand_in"):
            self.embedding = embedding if embedding is not None else LocalEmbeddings()
        else:
            self.embedding = embedding if embedding is not None else get_embedding(record["embedding"])
            if not overwrite:
                self._check_embedder(record["embedding"], record["dimension"], record.get("probe"), embedding is None)
                self.params = record["index"]
            if not self._call("list collections", self.client.has_collection, record["physical"]):
                raise StoreError(f"The store {self.where} is damaged: its collection {record['physical']!r} is "
                                 f"missing. {REBUILD_HINT}")
            if not overwrite:  # the old rows are never read once overwrite=True
                self._check_stamp(record)
                self._call("load the collection", self.client.load_collection, record["physical"])
        self._overwrite_pending = overwrite and record is not None

    def _read_record(self, overwrite: bool = False) -> dict[str, Any] | None:
        """The store's record as it is now (None if there is none). One that is damaged or of another format is a
        StoreError; with ``overwrite``, a stand-in (:meth:`_stand_in`), since the first write replaces it."""
        record: Any = None
        try:
            record = self.side.read_json("store")
            if isinstance(record, dict) and record.get("format") != FORMAT:
                problem = f"its record has an unknown format {record.get('format')!r}"
            elif record is not None and not (isinstance(record, dict) and all(k in record for k in RECORD_KEYS)):
                raise ValueError(f"it lacks {[k for k in RECORD_KEYS if k not in dict(record or {})]}")
            else:
                problem = ""
        except (ValueError, TypeError) as exc:
            problem = f"its record cannot be read ({exc})"
        if not problem:
            return record
        if overwrite:
            return self._stand_in(record)
        raise StoreError(f"The store {self.where} is damaged: {problem}. {REBUILD_HINT}")

    def _check_stamp(self, record: dict[str, Any]) -> None:
        """Refuse a record older than the write its chunks collection last saw (:func:`stamp_version`): the side
        collection lost writes, and the next write would delete the rows of the lost ones."""
        stamp = stamped_version(self.client, self._call, record["physical"])
        if stamp > record["version"] and stamp > (self._read_record() or {}).get("version", 0):  # not a new commit
            raise StoreError(f"The store {self.where} is damaged: its record is of version {record['version']} but "
                             f"its chunks collection was written by version {stamp}, so its side collection "
                             f"{self.side.name!r} lost its last writes. {REBUILD_HINT}")

    def _stand_in(self, record: Any) -> dict[str, Any]:
        """What overwrite=True replaces when the record is damaged or its collection gone: the newest chunks
        collection there is (dropped once the new one is committed) and the record's version, if readable."""
        found = generations(self.client, self._call, self.collection)
        version = record.get("version") if isinstance(record, dict) else 0
        return {"stand_in": True, "physical": found[-1][1] if found else None, "generation": max([0, *dict(found)]),
                "version": version if isinstance(version, int) else 0, "count": 0, "fingerprint": ""}

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.connection.call(what, fn, *args, **kwargs)

    @property
    def client(self) -> MilvusClient:
        """The client; a :class:`StoreError` after :meth:`close`."""
        return self.connection.open_client()

    def close(self) -> None:
        """Let go of the connection; for Milvus Lite, of the file too once no store of this process has it open,
        so that another process can open it."""
        self.connection.close()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._record["count"] if self._record and not self._overwrite_pending else 0

    def __repr__(self) -> str:
        kind = "Milvus Lite" if self.lite else "Milvus"
        return (f"VectorStore({self.path!r}, {kind} collection {self.collection!r}, {len(self)} chunks, "
                f"embedding={self.embedding!r})")

    @property
    def version(self) -> int:
        return self._record["version"] if self._record else 0

    @property
    def _physical(self) -> str:
        return self._record["physical"]

    @property
    def folder(self) -> Path:
        """The local folder for side files: ``<file>.db.files/<collection>`` for Milvus Lite; for a server the
        ``folder=`` given, or ``~/.cache/dmhelpers/milvus/<host>-<port>/<collection>``."""
        return self._folder

    @property
    def models(self) -> MilvusModels:
        """Deep Memory's jobs and models, in the side collection ``<collection>__dm`` on the same server."""
        return MilvusModels(self.side, f"{self.where}, side collection {self.side.name!r}")

    @property
    def fingerprint(self) -> str:
        return self._record["fingerprint"] if len(self) else corpus_fingerprint([], [])

    def _column(self, name: str) -> list[Any]:
        """One column of every committed row, in row order, read once (``seq`` ranges of 4,000 rows)."""
        if len(self) == 0:
            return []
        self.connection.open_client()  # a closed store says so, even for columns already read
        if name not in self._rows:
            field = {"ids": "id", "texts": "text", "metadatas": "metadata", "vectors": "vector"}[name]
            values: list[Any] = [None] * len(self)
            got = 0
            for lo in range(0, len(self), 4000):
                hi = min(lo + 4000, len(self))
                rows = self._call("read rows", self.client.query, self._physical, filter=f"seq >= {lo} and seq < {hi}",
                                  output_fields=["seq", field], limit=hi - lo, consistency_level="Strong")
                for r in rows:
                    values[r["seq"]] = r[field]
                got += len(rows)
            if got != len(self):
                raise StoreError(f"The store {self.where} is damaged: {got} rows found where its record says "
                                 f"{len(self)}. {REBUILD_HINT}")
            self._rows[name] = values
        return self._rows[name]

    @property
    def ids(self) -> list[str]:
        return list(self._column("ids"))

    @property
    def texts(self) -> list[str]:
        return list(self._column("texts"))

    @property
    def metadatas(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._column("metadatas")]

    @property
    def embeddings(self) -> np.ndarray:
        rows = self._column("vectors")
        if "array" not in self._rows:
            self._rows["array"] = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.embedding.dimension)
            self._rows["array"].flags.writeable = False
        return self._rows["array"]

    def _search(self, vectors: np.ndarray, k: int, fields: list[str], max_batch: int,
                budget: int) -> list[list[dict[str, Any]]]:
        """Search in batches of at most ``max_batch`` questions and ``budget`` results per call."""
        if len(self) == 0:
            raise StoreError(f"The store {self.where} is empty. Add texts first (notebook 01).")
        k = min(check_whole("k", k, 1, "chunks", "Use e.g. k=10."), len(self))
        if k > TOP_K_LIMIT:
            raise InputError(f"k={k} is above Milvus's limit of {TOP_K_LIMIT} results per question. Use a smaller k.")
        batch = max(1, min(max_batch, budget // k))
        vectors = np.asarray(vectors, dtype=np.float32)
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(vectors), batch):
            out.extend(self._call("search", self.client.search, self._physical,
                                  data=vectors[start:start + batch].tolist(), limit=k, filter=f"seq < {len(self)}",
                                  output_fields=fields, consistency_level=self.consistency,
                                  search_params={"metric_type": "COSINE", "params": {"ef": max(self.ef, k)}}))
        return out

    def knn(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions and cosine similarities of the ``k`` nearest chunks (-1 pads a short result)."""
        found = self._search(vectors, k, ["seq"], max_batch=1024, budget=2**16)
        width = max((len(r) for r in found), default=0)
        labels = np.full((len(found), width), -1, dtype=np.int64)
        scores = np.full((len(found), width), -np.inf, dtype=np.float32)
        for i, row in enumerate(found):
            labels[i, :len(row)] = [h["entity"]["seq"] for h in row]
            scores[i, :len(row)] = [h["distance"] for h in row]
        return labels, scores

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        found = self._search(vectors, k, ["text", "metadata"], max_batch=256, budget=2**12)
        return [[Hit(h["id"], h["entity"]["text"], float(h["distance"]), dict(h["entity"]["metadata"] or {}))
                 for h in row] for row in found]

    # ------------------------------------------------------------------ writing
    def _validate(self, texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None,
                  ids: Sequence[str] | None) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        texts, metadatas, ids = super()._validate(texts, metadatas, ids)
        check_limits(texts, metadatas, ids)
        return texts, metadatas, ids

    def _check_current(self) -> dict[str, Any] | None:
        """The record as it is now, or a :class:`StoreError` if another writer changed it since this opened it."""
        record = self._read_record(self._overwrite_pending)
        if (record["version"] if record else 0) != self.version:
            raise StoreError(f"The store {self.where} changed since it was opened (another process wrote to it). "
                             "Reopen it and add again.")
        return self._record if self._record and self._record.get("stand_in") else record

    def _existing_ids(self, texts: list[str], ids: Sequence[str] | None) -> set[str]:
        self._check_current()
        if len(self) == 0:
            return set()
        wanted = sorted(set(ids) if ids is not None else {text_id(t) for t in texts})
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            exprs = ", ".join(literal(i) for i in wanted[start:start + 500])
            found |= self._ids_where(f"id in [{exprs}]")
        if ids is None:  # the same text again gets "<hash>-2", "-3", ...: find the suffixes taken
            bases = sorted(found)
            for start in range(0, len(bases), 100):
                found |= self._ids_where(" or ".join(f"id like {literal(b + '-%')}"
                                                    for b in bases[start:start + 100]))
        return found

    def _ids_where(self, expr: str) -> set[str]:
        rows = self._call("read ids", self.client.query, self._physical, filter=f"({expr}) and seq < {len(self)}",
                          output_fields=["id"], limit=TOP_K_LIMIT, consistency_level="Strong")
        return {r["id"] for r in rows}

    def _commit(self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str], vectors: np.ndarray) -> None:
        owner = None if self.lite else self.side.lock(self.where)  # Lite: one process per file already
        try:
            record = self._check_current()
            fresh = record is None or self._overwrite_pending
            generation = (record["generation"] if record else 0) + fresh
            physical = f"{self.collection}__g{generation}"
            start = 0 if fresh else record["count"]
            try:
                if fresh:
                    if self._call("list collections", self.client.has_collection, physical):
                        self._call("drop a failed build", self.client.drop_collection, physical)
                    self._create(physical, vectors.shape[1])
                else:  # rows a failed write left behind: never searched, removed before their seq is reused
                    self._call("remove unfinished rows", self.client.delete, physical, filter=f"seq >= {start}")
                self._insert(physical, start, texts, metadatas, ids, vectors, owner)
                previous = "" if fresh else record["fingerprint"]
                batch = corpus_fingerprint(ids, texts)
                new = {"format": FORMAT, "physical": physical, "generation": generation,
                       "embedding": self.embedding.name, "probe": self._probe(),
                       "dimension": int(vectors.shape[1]), "index": self.params,
                       "count": start + len(ids), "version": self.version + 1, "metric": "COSINE",
                       "fingerprint": batch if not previous else
                       hashlib.sha256(f"{previous}:{batch}".encode()).hexdigest()[:16]}
                self.side.write_json("store", new)  # the commit point
            except Exception as exc:
                undo_quietly(self.client, physical, fresh, start)
                raise StoreError(f"Adding {len(ids)} chunks to the store {self.where} failed: {exc}. The store is "
                                 f"unchanged: it still holds its {len(self)} chunks (rows of this write that reached "
                                 "Milvus are never searched and are removed by the next write). Fix the cause, then "
                                 "add the texts again.") from exc
            flush_quietly(self.client, physical)
            stamp_version(self.client, physical, new["version"])
            if fresh:
                point_alias(self.client, self.collection, physical, record and record["physical"])
        finally:
            self.side.unlock(owner)
        if not fresh and self._rows:
            for name, values in (("ids", ids), ("texts", texts), ("metadatas", metadatas), ("vectors", vectors)):
                if name in self._rows:
                    self._rows[name] = self._rows[name] + list(values)
            self._rows.pop("array", None)
        else:
            self._rows = {}
        self._record, self._overwrite_pending = new, False

    def _create(self, physical: str, dim: int) -> None:
        create_chunks(self.client, self._call, physical, dim, self.params)

    def _insert(self, physical: str, start: int, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str],
                vectors: np.ndarray, owner: str | None) -> None:
        batch: list[dict[str, Any]] = []
        size, renewed = 0, time.monotonic()
        for n, (i, t, m, v) in enumerate(zip(ids, texts, metadatas, vectors.astype(np.float32).tolist())):
            batch.append({"id": i, "seq": start + n, "text": t, "metadata": m, "vector": v})
            size += len(t) * 4 + len(v) * 4 + 256
            if size > INSERT_BYTES or n == len(ids) - 1:
                self._call("insert rows", self.client.insert, physical, batch)
                batch, size = [], 0
                if owner and time.monotonic() - renewed > LEASE_S / 3:
                    self.side.renew(owner)
                    renewed = time.monotonic()
