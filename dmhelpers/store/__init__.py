"""The vector store: one :class:`VectorStore` over two backends, chosen by the path you give it: a folder (hnswlib,
:mod:`~dmhelpers.store.hnsw_store`), a ``.db`` file (Milvus Lite) or an ``http(s)://`` URI (a Milvus server or
cluster; :mod:`~dmhelpers.store.milvus_store`)."""
from dmhelpers.store.hnsw_store import HnswlibStore
from dmhelpers.store.milvus_store import MilvusStore
from dmhelpers.store.vector_store import Hit, VectorStore

__all__ = ["Hit", "HnswlibStore", "MilvusStore", "VectorStore"]
