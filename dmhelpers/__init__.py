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
from dmhelpers.record import read_records, record
from dmhelpers.seed import set_random_seed
from dmhelpers.store import Hit, VectorStore
from dmhelpers.text import Document, html_to_text, page_title, split_documents, unique_documents

__all__ = [
    "BUNDLED_MODEL", "DEFAULT_MODULES", "CrawlError", "DeepMemoryError", "Document", "EmbeddingError", "Hit",
    "InputError", "LocalEmbeddings", "OpenAIEmbeddings", "Page", "QuestionGenerationError", "StoreError", "StoreLockedError", "VectorStore",
    "build_python_docs", "extract_links", "generate_questions", "get_all_links", "get_embedding", "html_to_text",
    "load_pages", "load_questions", "open_site", "page_title", "pages_to_documents", "read_records", "record",
    "save_questions", "serve_folder", "set_random_seed", "split_documents", "split_questions", "unique_documents",
]
