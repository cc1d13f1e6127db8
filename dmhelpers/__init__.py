"""Deep Memory Notebooks helpers: the machinery behind the tutorial notebooks.

    from dmhelpers import VectorStore, LocalEmbeddings, OpenAIEmbeddings
    db.deep_memory.train(...), db.search(question, deep_memory=True)
"""
from dmhelpers.crawl import Page, extract_links, get_all_links, load_pages, pages_to_documents
from dmhelpers.docsite import DEFAULT_MODULES, build_python_docs, open_site, serve_folder
from dmhelpers.embeddings import BUNDLED_MODEL, LocalEmbeddings, OpenAIEmbeddings, get_embedding
from dmhelpers.errors import (CrawlError, DeepMemoryError, EmbeddingError, InputError, StoreError,
                              StoreLockedError)
from dmhelpers.questions import (QuestionGenerationError, generate_questions, load_questions, save_questions,
                                 split_questions)
from dmhelpers.ragas_eval import context_recall
from dmhelpers.record import read_records, record
from dmhelpers.retrieval import Answer, DeepMemoryRetriever, answer
from dmhelpers.seed import set_random_seed
from dmhelpers.store import Hit, VectorStore
from dmhelpers.tokens import count_tokens, get_encoding
from dmhelpers.text import Document, html_to_text, page_title, split_documents, unique_documents

__all__ = [
    "Answer", "BUNDLED_MODEL", "CrawlError", "DEFAULT_MODULES", "DeepMemoryError", "DeepMemoryRetriever",
    "Document", "EmbeddingError", "Hit", "InputError", "LocalEmbeddings", "OpenAIEmbeddings", "Page",
    "QuestionGenerationError", "StoreError", "StoreLockedError", "VectorStore", "answer", "build_python_docs",
    "context_recall", "count_tokens", "extract_links", "generate_questions", "get_all_links", "get_embedding",
    "get_encoding", "html_to_text", "load_pages", "load_questions", "open_site", "page_title",
    "pages_to_documents", "read_records", "record", "save_questions", "serve_folder", "set_random_seed",
    "split_documents", "split_questions", "unique_documents",
]
