"""A LangChain retriever over a store, with or without deep memory.

    retriever = db.as_retriever(k=10, deep_memory=True)
    docs = retriever.invoke("How do I read a zip file?")      # LangChain Documents with source, id and score

It is a real ``langchain_core`` retriever, so it drops into LangChain chains (the tutorial's ``RetrievalQA``); the
notebooks themselves need no LangChain.
"""
from __future__ import annotations

from typing import Any, Protocol

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from dmhelpers.utils.errors import InputError, check_whole


class _Store(Protocol):
    """What a retriever needs from a store: search, and whether a Deep Memory model is active."""

    def search(self, query: Any, k: int = 10, deep_memory: bool = False) -> Any: ...

    @property
    def deep_memory(self) -> Any: ...


class DeepMemoryRetriever(BaseRetriever):
    """The top ``k`` chunks of a :class:`~dmhelpers.VectorStore` for a question, with or without deep memory."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    store: Any  # a VectorStore (typed loosely: pydantic cannot validate it)
    k: int = 10
    deep_memory: bool = False

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [as_document(h) for h in self.store.search(query, k=self.k, deep_memory=self.deep_memory)]

    def batch(self, inputs: list[str], config: Any = None, **kwargs: Any) -> list[list[Document]]:
        """Several questions at once: embedded and searched as one batch (LangChain's default runs them one by
        one in threads). Callbacks are not run on this path."""
        if not inputs:
            return []
        return [[as_document(h) for h in hits] for hits in self.store.search(list(inputs), k=self.k,
                                                                            deep_memory=self.deep_memory)]


def as_document(hit) -> Document:
    """A search hit as a LangChain Document: its text, with its metadata plus id and score."""
    return Document(page_content=hit.text, metadata={**hit.metadata, "id": hit.id, "score": hit.score})


def make_retriever(store: _Store, k: int = 10, deep_memory: bool = False) -> DeepMemoryRetriever:
    """Checked construction for :meth:`VectorStore.as_retriever`."""
    k = check_whole("k", k, 1, "chunks to retrieve", "Use e.g. k=10.")
    if deep_memory and store.deep_memory.get_model() is None:
        raise InputError("as_retriever(deep_memory=True) needs a trained model: run db.deep_memory.train(...) first "
                         "(notebook 02), or use deep_memory=False.")
    return DeepMemoryRetriever(store=store, k=k, deep_memory=bool(deep_memory))
