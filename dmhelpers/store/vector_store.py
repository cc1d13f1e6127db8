"""``VectorStore``: chunks, their vectors and a k-NN index, with one API over two backends chosen by what you pass.

    VectorStore("../data/store")                                 # a folder: hnswlib in this process (the default)
    VectorStore("../data/store.db")                              # a .db path: Milvus Lite, embedded
    VectorStore("http://127.0.0.1:19530", collection="docs")     # a Milvus server or cluster (token: MILVUS_TOKEN)

Both backends hold the same records (id, text, JSON metadata, normalised vector) in the same row order, search by
cosine similarity, and give Deep Memory the same small interface
(:class:`~dmhelpers.deep_memory.interface.SearchableStore`), so training, ``search(..., deep_memory=True)``,
evaluation and retrievers behave the same on either. ``db.folder`` is a local folder that belongs to the store,
for the files the notebooks keep beside it (questions, LLM caches).

Both record the embedder's name, dimension and its vector of a fixed probe sentence, and refuse another model on
open; both get their vectors checked here: the embedder's (one finite, non-zero vector per text, stored as unit
vectors) and the query vectors of ``knn``/``search_vectors`` (2-D, the store's width, finite), before any index.

This module holds what both backends share; :mod:`~dmhelpers.store.hnsw_store` and
:mod:`~dmhelpers.store.milvus_store` hold what differs.
"""
from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dmhelpers.deep_memory.jobs import DeepMemory
from dmhelpers.deep_memory.repository import ModelRepository
from dmhelpers.embeddings import Embedder, LocalEmbeddings, check_embedder
from dmhelpers.rag.retriever import make_retriever
from dmhelpers.store.records import Hit, assign_ids, check_records
from dmhelpers.utils.errors import InputError, StoreError

__all__ = ["Hit", "VectorStore", "backend_of"]


POINTER = "STORE"  # the file naming an hnswlib store folder's current snapshot
PROBE = "Deep Memory checks its embedder: how do I read the rows of a CSV file in Python?"
PROBE_MIN_COSINE = 0.99  # the same model on another machine gives ~1.0; another model far less


def backend_of(path: Any) -> str:
    """``"milvus"`` for an ``http(s)://`` URI or a path ending in ``.db`` (unless that is an hnswlib store folder),
    ``"hnswlib"`` for any other path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise InputError(f"STORE_PATH must be a folder path, a path ending in .db (Milvus Lite) or a Milvus URI "
                         f"such as 'http://127.0.0.1:19530', got {path!r}. Use e.g. STORE_PATH = '../data/store'.")
    text = str(path)
    if text.startswith(("http://", "https://")):
        return "milvus"
    if "://" in text:
        raise InputError(f"{text!r} is not a store this package can open: use a folder path, a path ending in .db, "
                         "or an http:// or https:// Milvus URI (e.g. 'http://127.0.0.1:19530').")
    if text.endswith(".db") and not (Path(text) / POINTER).is_file():
        return "milvus"
    return "hnswlib"


class VectorStore:
    """A persisted vector store (cosine similarity) over hnswlib or Milvus, chosen by ``path``.

    Args (every backend):
        path: a folder (hnswlib), a path ending in ``.db`` (Milvus Lite) or an ``http(s)://`` Milvus URI.
        embedding: the embedder; ``None`` means the one the store was built with, or
            :class:`~dmhelpers.LocalEmbeddings` for a new store.
        overwrite: start empty; the old contents are replaced on the first write (not before, so a
            failed rebuild never loses the old store).
        read_only: open for search only; nothing is ever written.
        M, ef_construction: HNSW graph parameters, fixed when the index is built.
        ef: HNSW search breadth (higher is more exact and slower); raised to ``k`` when needed.

    The hnswlib backend also takes ``random_seed``; the Milvus backend takes ``collection``, ``token``,
    ``folder``, ``consistency`` and ``timeout`` (see :class:`~dmhelpers.store.milvus_store.MilvusStore`).
    """

    backend = ""  # "hnswlib" or "milvus": set by each backend class
    path: Path | str
    read_only: bool
    embedding: Embedder
    _deep_memory: DeepMemory | None = None  # made on first use; reset when the corpus changes

    _probe_pending: list[float] | None = None  # a recorded probe still to compare with the store's embedder
    _probe_vector: list[float] | None = None

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any) -> VectorStore:
        if cls is VectorStore:
            name = backend_of(path)
            cls = next(c for c in VectorStore.__subclasses__() if c.backend == name)
        check_embedder(args[0] if args else kwargs.get("embedding"))
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend's ``knn`` and ``search_vectors`` get their query vectors checked here first
        (:meth:`_check_queries`), so no backend ever sees vectors of the wrong shape."""
        super().__init_subclass__(**kwargs)
        for name in ("knn", "search_vectors"):
            if name in cls.__dict__:
                setattr(cls, name, _checking_queries(cls.__dict__[name]))

    # ------------------------------------------------------------------ what each backend provides
    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def ids(self) -> list[str]:
        """Chunk ids, in row order."""
        raise NotImplementedError

    @property
    def texts(self) -> list[str]:
        raise NotImplementedError

    @property
    def metadatas(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    @property
    def embeddings(self) -> np.ndarray:
        """The stored chunk vectors, shape ``(len(self), dimension)``, in row order (read-only)."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """A hash of the corpus: models trained on it record it, and are refused once it changes."""
        raise NotImplementedError

    @property
    def folder(self) -> Path:
        """A local folder that belongs to this store, for files kept beside it (``db.folder / "questions"``).
        It may not exist yet: whoever writes there creates it."""
        raise NotImplementedError

    @property
    def models(self) -> ModelRepository:
        """Where Deep Memory keeps this store's jobs and the active-model pointer."""
        raise NotImplementedError

    def knn(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions and cosine similarities of the ``k`` nearest chunks to each vector."""
        raise NotImplementedError

    def hits(self, rows: list[int]) -> list[Hit]:
        """Search results (score 0) for chunk rows: what Deep Memory's memory can put in results."""
        ids, texts, metadatas = self.ids, self.texts, self.metadatas
        return [Hit(ids[r], texts[r], 0.0, dict(metadatas[r])) for r in rows]

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Nearest chunks to each row of ``vectors`` (already embedded with this store's embedder)."""
        raise NotImplementedError

    def _existing_ids(self, texts: list[str], ids: Sequence[str] | None) -> set[str]:
        """The ids already in the store that the new rows' ids could collide with."""
        raise NotImplementedError

    def _commit(self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str], vectors: np.ndarray) -> None:
        """Add the rows all at once, or raise and leave the store as it was."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    def close(self) -> None:
        """Let go of the store's connection or files (the Milvus backend's; nothing to do for hnswlib)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VectorStore({str(self.path)!r}, {len(self)} chunks, embedding={self.embedding!r})"

    @property
    def deep_memory(self) -> DeepMemory:
        """Training jobs and the active query adapter (see :mod:`dmhelpers.deep_memory.jobs`)."""
        if self._deep_memory is None:
            self._deep_memory = DeepMemory(self)
        return self._deep_memory

    def search(self, query: str | Sequence[str], k: int = 10, deep_memory: bool = False) -> list[Hit] | list[list[Hit]]:
        """Nearest chunks to a question (a list of hits) or to each of several (a list of lists).

        With ``deep_memory=True`` the question's vector goes through the active model's layer first, and its memory
        may lift one chunk it remembers into the results, here in this process; the corpus vectors and the index are
        the same either way.
        """
        single = isinstance(query, str)
        queries = [query] if single else list(query) if isinstance(query, (list, tuple)) else []
        if not queries or any(not isinstance(q, str) or not q.strip() for q in queries):
            raise InputError("search() needs a non-empty question or a list of non-empty questions.")
        vectors = self.embed_queries(queries)
        if deep_memory:
            moved = self.deep_memory.transform(vectors)
            hits = self.deep_memory.rerank(vectors, moved, self.search_vectors(moved, k), k)
        else:
            hits = self.search_vectors(vectors, k)
        return hits[0] if single else hits

    def as_retriever(self, k: int = 10, deep_memory: bool = False):
        """A LangChain retriever of this store's top ``k`` chunks (see :mod:`dmhelpers.rag.retriever`)."""
        return make_retriever(self, k, deep_memory)

    def add_texts(self, texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None = None,
                  ids: Sequence[str] | None = None) -> list[str]:
        """Embed and add ``texts``; returns their ids (content hashes when ``ids`` is None)."""
        texts, metadatas, ids = self._validate(texts, metadatas, ids)
        vectors = self._embed(texts, "text")
        self._commit(texts, metadatas, ids, vectors)
        self._deep_memory = None  # the corpus changed: models are re-checked against it
        return ids

    def add_documents(self, documents: Iterable[Any]) -> list[str]:
        """Add objects with ``.page_content`` and ``.metadata`` (LangChain-style documents)."""
        documents = list(documents)
        try:
            texts = [d.page_content for d in documents]
            metadatas = [dict(d.metadata or {}) for d in documents]
        except AttributeError as exc:
            raise InputError(f"add_documents() needs objects with .page_content and .metadata ({exc}). "
                             "Use add_texts() for plain strings.") from exc
        return self.add_texts(texts, metadatas)

    def _validate(self, texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None,
                  ids: Sequence[str] | None) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        if self.read_only:
            raise StoreError(f"The store at {self.path} was opened with read_only=True. Open it with "
                             "read_only=False to add texts.")
        texts, metadatas, ids = check_records(texts, metadatas, ids)
        return texts, metadatas, assign_ids(texts, ids, self._existing_ids(texts, ids))

    def _embedder(self) -> str:
        """The embedder in words for messages: its repr, or its class and name when the repr says nothing."""
        e = self.embedding
        return repr(e) if type(e).__repr__ is not object.__repr__ else f"{type(e).__name__}({e.name!r})"

    def _dimension(self) -> int:
        """The width of the store's vectors."""
        return self.embedding.dimension

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Questions embedded with the store's embedder, checked against the store first, as unit vectors
        (what :meth:`search`, Deep Memory training and evaluation search with)."""
        return self._embed(list(texts), "question")

    def _embed(self, texts: list[str], what: str) -> np.ndarray:
        """``texts`` embedded with the store's embedder (checked against the store first), as unit vectors."""
        if self._probe_pending is not None:
            self._compare_probe(self._probe_pending)  # raises, every time, for another model
            self._probe_pending = None
        return self._check_vectors(self.embedding.embed(texts), len(texts), what)

    def _check_vectors(self, vectors: Any, n: int, what: str = "text") -> np.ndarray:
        """The embedder's output as ``(n, dimension)`` float32 unit vectors, or a :class:`StoreError`: it must be
        an array (or array-like) of finite numbers, one vector per text, none all zeros."""
        try:
            vectors = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"The embedder {self._embedder()} returned something that is not an array of numbers "
                             f"({exc}). Fix its embed() (one vector of its dimension per {what}), or use another "
                             "embedder.") from exc
        if vectors.shape != (n, self._dimension()) or not np.isfinite(vectors).all():
            raise StoreError(f"The embedder returned vectors of shape {vectors.shape}, expected "
                             f"{(n, self._dimension())} finite values. Fix its embed() (one vector "
                             "of its dimension per text, no NaN), or use another embedder.")
        norms = np.linalg.norm(vectors, axis=1)
        zero = np.flatnonzero(norms < 1e-6)
        if zero.size:
            raise StoreError(f"The embedder {self._embedder()} returned an all-zero vector for {what} {zero[0]} "
                             f"({zero.size} of {n} such): a zero vector has no direction, so cosine search cannot "
                             f"rank it. Fix its embed(), or drop or reword that {what}.")
        return vectors / norms[:, None]  # the store is cosine: unit vectors, whatever the embedder returned

    def _check_queries(self, vectors: Any) -> np.ndarray:
        """Query vectors for ``knn``/``search_vectors`` as a ``(n, dimension)`` float32 array of finite numbers,
        or an :class:`InputError` before any index sees them."""
        dim = self._dimension()
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Query vectors must be an array of numbers of shape (n, {dim}) ({exc}). Embed the "
                             "questions with db.embed_queries([...]).") from exc
        if array.ndim != 2 or array.shape[1] != dim or not np.isfinite(array).all():
            raise InputError(f"Query vectors must be a 2-D array of shape (n, {dim}) of finite numbers (this store's "
                             f"dimension), got shape {array.shape}{'' if np.isfinite(array).all() else ' with NaN'}. "
                             f"Embed the questions with this store's embedder ({self._embedder()}); a single vector "
                             "v is v[None, :].")
        return array

    def _probe(self) -> list[float] | None:
        """The embedder's vector of :data:`PROBE`, rounded (recorded with the store), or ``None`` when the
        embedder cannot embed it (an embedder for one kind of text only)."""
        if self._probe_vector is None:
            try:
                vector = self._check_vectors(self.embedding.embed([PROBE]), 1)[0]
            except Exception:  # noqa: BLE001 - a probe is a check on top; without one, names are compared
                return None
            self._probe_vector = [round(float(x), 4) for x in vector]
        return self._probe_vector

    def _compare_probe(self, recorded: list[float]) -> None:
        mine = self._probe()
        if mine is None:
            return  # an embedder that cannot embed the probe: its vectors are checked when they are used
        a, b = np.asarray(recorded, dtype=np.float64), np.asarray(mine, dtype=np.float64)
        cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        if cosine < PROBE_MIN_COSINE:
            raise StoreError(
                f"The store at {self.path} was built with an embedder named {self.embedding.name!r}, but "
                f"{self._embedder()} is a different model under that name: its vector of a fixed probe sentence has "
                f"cosine {cosine:.3f} to the recorded one (at least {PROBE_MIN_COSINE} for the same model). Its "
                "vectors cannot be compared with the store's. Open the store with the model it was built with, "
                "or rebuild it with this one (overwrite=True).")

    def _check_embedder(self, name: str, dim: int, probe: list[float] | None = None, own: bool = False) -> None:
        """Refuse an embedder other than the one the stored vectors were made with: by name, dimension and, when
        the store recorded one, its vector of a probe sentence (compared at once for a local model, which is
        loaded already; for any other embedder, passed in or the store's own, at its first use, so opening a
        store costs no remote embedding call). ``own`` (the embedder is the store's own) no longer changes that."""
        if self.embedding.name != name:
            raise StoreError(
                f"The store at {self.path} was built with the embedder {name!r}, not {self.embedding.name!r}: "
                f"its vectors cannot be compared. Open it with embedding=None (uses {name!r}), or rebuild "
                "it with the new embedder (overwrite=True)."
            )
        if self.embedding.dimension != dim:
            raise StoreError(f"The store at {self.path} holds {dim}-dimensional vectors but {self.embedding!r} "
                             f"makes {self.embedding.dimension}-dimensional ones. Use the store's embedder, or rebuild.")
        if probe is not None:
            if not isinstance(self.embedding, LocalEmbeddings):
                self._probe_pending = probe  # e.g. OpenAI: no paid call just to open the store
            else:
                self._compare_probe(probe)


_CHECKED: contextvars.ContextVar[Any] = contextvars.ContextVar("checked_queries", default=None)


def _checking_queries(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method(self, vectors, ...)`` with ``vectors`` checked by :meth:`VectorStore._check_queries` first; the
    very array a caller's wrapper just checked (``search_vectors`` passing it on to ``knn``) is not checked
    again. Per thread and task (a context variable), so a concurrent call never skips its own check."""
    @functools.wraps(method)
    def checked(self: VectorStore, vectors: Any, *args: Any, **kwargs: Any) -> Any:
        if vectors is not None and vectors is _CHECKED.get():
            return method(self, vectors, *args, **kwargs)
        vectors = self._check_queries(vectors)
        token = _CHECKED.set(vectors)
        try:
            return method(self, vectors, *args, **kwargs)
        finally:
            _CHECKED.reset(token)

    return checked
