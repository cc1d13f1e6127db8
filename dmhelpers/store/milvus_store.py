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
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from dmhelpers.embeddings import Embedder, LocalEmbeddings, get_embedding
from dmhelpers.store.milvus_connection import Connection, side_folder
from dmhelpers.store.milvus_side import LEASE_S, SUFFIX, MilvusModels, SideCollection
from dmhelpers.store.records import Hit, corpus_fingerprint, text_id
from dmhelpers.store.vector_store import VectorStore
from dmhelpers.utils.errors import InputError, StoreError, check_whole

FORMAT = 1
TEXT_BYTES, ID_BYTES, METADATA_BYTES = 65_535, 64, 65_536  # Milvus's VARCHAR and JSON limits in this schema
TOP_K_LIMIT = 16_384  # Milvus's largest k
INSERT_BYTES = 16 * 2**20  # rows per insert call are kept under this (gRPC messages are limited to 64 MiB)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,180}")
REBUILD_HINT = "Rebuild it with notebook 01 (OVERWRITE = True) or VectorStore(uri, overwrite=True)."


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
        self.path, self.collection, self.read_only, self.ef = str(path), collection, read_only, ef
        self.lite = not self.path.startswith(("http://", "https://"))
        self.uri = str(Path(self.path).expanduser().resolve()) if self.lite else self.path
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
        self.connection = Connection(self.path, self.uri, self.lite,
                                     token if token is not None else os.environ.get("MILVUS_TOKEN", ""), timeout)
        self.side = SideCollection(self.client, collection + SUFFIX, self._call)
        try:
            self._open(embedding, overwrite)
        except BaseException:
            self.close()  # a refused open holds nothing (for Milvus Lite: not the file)
            raise

    def _open(self, embedding: Embedder | None, overwrite: bool) -> None:
        """Read the store's record and check it against the arguments (no write)."""
        read_only, collection = self.read_only, self.collection
        try:
            record = self.side.read_json("store")
        except ValueError as exc:
            raise StoreError(f"The store {self.where} is damaged: its record cannot be read ({exc}). "
                             f"{REBUILD_HINT}") from exc
        self._record = record
        if record is None:
            if read_only:
                raise StoreError(f"No store {self.where}: read_only=True needs an existing store. Build one first "
                                 "with notebook 01, or check STORE_PATH and collection=.")
            if self._call("list collections", self.client.has_collection, collection):
                raise StoreError(f"{self.where} already holds a collection {collection!r} that this package did "
                                 "not make (it has no record). Choose another collection= name, or drop that one.")
            self.embedding = embedding if embedding is not None else LocalEmbeddings()
        else:
            if record.get("format") != FORMAT:
                raise StoreError(f"The store {self.where} has a record of unknown format {record.get('format')!r}. "
                                 f"{REBUILD_HINT}")
            self.embedding = embedding if embedding is not None else get_embedding(record["embedding"])
            if not overwrite:
                self._check_embedder(record["embedding"], record["dimension"])
                self.params = record["index"]
            if not self._call("list collections", self.client.has_collection, record["physical"]):
                raise StoreError(f"The store {self.where} is damaged: its collection {record['physical']!r} is "
                                 f"missing. {REBUILD_HINT}")
            self._call("load the collection", self.client.load_collection, record["physical"])
        self._overwrite_pending = overwrite and record is not None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.connection.call(what, fn, *args, **kwargs)

    @property
    def client(self) -> MilvusClient:
        return self.connection.client

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
        if "array" not in self._rows:
            rows = self._column("vectors")
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
        for n, (t, i, m) in enumerate(zip(texts, ids, metadatas)):
            if len(t.encode("utf-8")) > TEXT_BYTES:
                raise InputError(f"Text {n} is {len(t.encode('utf-8')):,} bytes long: a Milvus store holds at most "
                                 f"{TEXT_BYTES:,} bytes per chunk. Split it (a smaller CHUNK_SIZE), then add again.")
            if len(i.encode("utf-8")) > ID_BYTES:
                raise InputError(f"Id {n} ({i[:20]!r}...) is longer than {ID_BYTES} bytes, Milvus's limit for this "
                                 "store's ids. Use shorter ids, or ids=None to generate them.")
            if len(json.dumps(m, ensure_ascii=False).encode("utf-8")) > METADATA_BYTES:
                raise InputError(f"Metadata {n} is over {METADATA_BYTES:,} bytes as JSON, Milvus's limit. Keep large "
                                 "values elsewhere and store a reference.")
        return texts, metadatas, ids

    def _check_current(self) -> dict[str, Any] | None:
        """The record as it is now, or a :class:`StoreError` if another writer changed it since this opened it."""
        record = self.side.read_json("store")
        if (record["version"] if record else 0) != self.version:
            raise StoreError(f"The store {self.where} changed since it was opened (another process wrote to it). "
                             "Reopen it and add again.")
        return record

    def _existing_ids(self, texts: list[str], ids: Sequence[str] | None) -> set[str]:
        self._check_current()
        if len(self) == 0:
            return set()
        wanted = sorted(set(ids) if ids is not None else {text_id(t) for t in texts})
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            exprs = ", ".join(_literal(i) for i in wanted[start:start + 500])
            found |= self._ids_where(f"id in [{exprs}]")
        if ids is None:  # the same text again gets "<hash>-2", "-3", ...: find the suffixes taken
            bases = sorted(found)
            for start in range(0, len(bases), 100):
                found |= self._ids_where(" or ".join(f'id like "{b}-%"' for b in bases[start:start + 100]))
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
                       "embedding": self.embedding.name, "dimension": int(vectors.shape[1]), "index": self.params,
                       "count": start + len(ids), "version": self.version + 1, "metric": "COSINE",
                       "fingerprint": batch if not previous else
                       hashlib.sha256(f"{previous}:{batch}".encode()).hexdigest()[:16]}
                self.side.write_json("store", new)  # the commit point
            except Exception as exc:
                self._undo(physical, fresh, start)
                raise StoreError(f"Adding {len(ids)} chunks to the store {self.where} failed: {exc}. The store is "
                                 f"unchanged: it still holds its {len(self)} chunks (rows of this write that reached "
                                 "Milvus are never searched and are removed by the next write). Fix the cause, then "
                                 "add the texts again.") from exc
            self._flush(physical)
            if fresh:
                self._point_alias(physical, record)
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
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
        schema.add_field("seq", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE",
                        params={"M": self.params["M"], "efConstruction": self.params["ef_construction"]})
        self._call("create the collection", self.client.create_collection, physical, schema=schema,
                   index_params=index, consistency_level="Strong")

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

    def _flush(self, physical: str) -> None:
        """Seal the new rows, so they get the HNSW index: rows left growing are searched by brute force (in Milvus
        Lite about 50x slower, in the writing process). Best effort: the rows are committed either way, and a server
        may rate-limit flushes."""
        try:
            self.client.flush(physical)
        except MilvusException:
            pass

    def _undo(self, physical: str, fresh: bool, start: int) -> None:
        """Best effort after a failed write; what it cannot remove is invisible and the next write removes it."""
        try:
            if fresh:
                self.client.drop_collection(physical)
            else:
                self.client.delete(physical, filter=f"seq >= {start}")
        except Exception:  # noqa: BLE001 - the server may be gone; the record still names the old rows
            pass

    def _point_alias(self, physical: str, old: dict[str, Any] | None) -> None:
        """Let other clients find the new generation under the store's name, then drop the old one."""
        try:
            if old is not None and self.collection in self.client.list_aliases(old["physical"]).get("aliases", []):
                self.client.alter_alias(physical, self.collection)
            else:
                self.client.create_alias(physical, self.collection)
            if old is not None and old["physical"] != physical:
                self.client.drop_collection(old["physical"])
        except MilvusException:  # the record already names the new generation; the next overwrite retries
            pass


def _literal(value: str) -> str:
    """A string as a Milvus expression literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
