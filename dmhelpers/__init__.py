"""Deep Memory Notebooks helpers: the machinery behind the tutorial notebooks.

    from dmhelpers import VectorStore, LocalEmbeddings, OpenAIEmbeddings
    db.deep_memory.train(...), db.search(question, deep_memory=True)

By role: ``data`` (crawl, offline docs site, text, synthetic sets), ``embeddings``, ``store`` (hnswlib or Milvus,
chosen by the path), ``questions``, ``deep_memory``, ``evaluation``, ``rag``, ``llm`` (chat models: the local
server, endpoints, concurrency), ``plots``; plumbing in ``utils``; ``tooling`` runs the notebooks.
"""
from dmhelpers import plots
from dmhelpers.data.crawl import Page, extract_links, get_all_links, load_pages, pages_to_documents
from dmhelpers.data.docsite import (DEFAULT_MODULES, WORKSHOP_PAGES, build_python_docs, open_site, preset_pages,
                                    serve_folder)
from dmhelpers.data.text import Document, html_to_text, page_title, split_documents, unique_documents
from dmhelpers.embeddings import BUNDLED_MODEL, LocalEmbeddings, OpenAIEmbeddings, get_embedding
from dmhelpers.evaluation.context_recall import context_recall
from dmhelpers.evaluation.cost import cost_curve, savings, smallest_k
from dmhelpers.llm import LocalLLM, local_llm
from dmhelpers.questions import (REAL_SIBLINGS, generate_questions, load_questions, save_questions, sibling_summary,
                                 siblings, split_questions)
from dmhelpers.rag import (Answer, DeepMemoryRetriever, answer, answer_all, best_sentence, count_tokens, get_encoding,
                           pick_example)
from dmhelpers.store import Hit, VectorStore
from dmhelpers.utils.errors import (ChatModelError, CrawlError, DeepMemoryError, EmbeddingError, InputError,
                                    QuestionGenerationError, StoreError, StoreLockedError)
from dmhelpers.utils.notebook import SideBySide, check_parameters, show_text
from dmhelpers.utils.record import read_records, record
from dmhelpers.utils.seed import set_random_seed

__all__ = [
    "Answer", "BUNDLED_MODEL", "REAL_SIBLINGS", "ChatModelError", "CrawlError", "DEFAULT_MODULES", "DeepMemoryError",
    "DeepMemoryRetriever", "Document", "EmbeddingError", "Hit", "InputError", "LocalEmbeddings", "LocalLLM",
    "OpenAIEmbeddings", "Page", "QuestionGenerationError", "SideBySide", "StoreError", "StoreLockedError",
    "VectorStore", "WORKSHOP_PAGES", "answer", "answer_all", "best_sentence", "build_python_docs", "check_parameters", "context_recall",
    "cost_curve", "count_tokens", "extract_links", "generate_questions", "get_all_links", "get_embedding",
    "get_encoding", "html_to_text", "load_pages", "load_questions", "local_llm", "open_site", "page_title",
    "pages_to_documents", "pick_example", "plots", "preset_pages", "read_records", "record", "save_questions", "savings",
    "serve_folder", "set_random_seed", "show_text", "sibling_summary", "siblings", "smallest_k", "split_documents",
    "split_questions", "unique_documents",
]
