"""The vector store: chunks, their vectors and an index, persisted in one folder."""
from dmhelpers.store.vector_store import Hit, VectorStore

__all__ = ["Hit", "VectorStore"]
