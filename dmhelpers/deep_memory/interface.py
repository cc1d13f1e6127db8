"""What Deep Memory needs from a store: a small interface, so any backend that has it can train and serve models
(both backends of :class:`~dmhelpers.VectorStore`, hnswlib and Milvus, have it). Deep Memory never imports a store
class."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dmhelpers.deep_memory.repository import ModelRepository
from dmhelpers.embeddings import Embedder


class SearchableStore(Protocol):
    """A store of chunk vectors that Deep Memory can train on and search through."""

    path: Path | str  # where the store is, for messages
    read_only: bool  # True: training and changing the active model are refused
    embedding: Embedder  # the embedder of the chunks (its name and dimension are recorded with each model)

    def __len__(self) -> int: ...

    @property
    def ids(self) -> list[str]:
        """Chunk ids, in row order."""

    @property
    def embeddings(self) -> np.ndarray:
        """Chunk vectors ``(len(self), dimension)``, normalised, in row order."""

    @property
    def fingerprint(self) -> str:
        """A hash of the ids and texts: a model records the corpus version it was trained on."""

    @property
    def models(self) -> ModelRepository:
        """Where this store's Deep Memory jobs and the active-model pointer live."""

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Questions embedded with the store's embedder, checked against the store first, as unit vectors
        ``(len(texts), dimension)``: what training and evaluation use, never ``embedding.embed`` directly."""

    def hits(self, rows: list[int]) -> list[Any]:
        """Search results (id, text, score 0, metadata) for chunk rows: what the memory can put in results."""

    def knn(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions and cosine similarities of the ``k`` nearest chunks to each vector."""
