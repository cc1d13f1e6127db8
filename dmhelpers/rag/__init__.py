"""Retrieval-augmented generation: a LangChain retriever, grounded answers, and prompt tokens counted offline."""
from dmhelpers.rag.answers import Answer, answer, answer_all, best_sentence, build_messages
from dmhelpers.rag.examples import pick_example
from dmhelpers.rag.retriever import DeepMemoryRetriever, as_document, make_retriever
from dmhelpers.rag.tokens import count_tokens, get_encoding

__all__ = ["Answer", "DeepMemoryRetriever", "answer", "answer_all", "as_document", "best_sentence", "build_messages",
           "count_tokens", "get_encoding", "make_retriever", "pick_example"]
