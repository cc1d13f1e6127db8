"""The bad-input suite: every case is one row of ``CASES``.

Each case calls the public API (or a notebook parameter's check in the package) with one bad input and asserts

- the exception's exact type, which derives from ``DeepMemoryError`` (one family of deliberate errors);
- that the message names the problem (``problem``, a regex) and the fix (``fix``, a regex);
- that the workspace, holding the store folder and anything else the case could write, is byte-identical
  afterwards: every file's SHA-256 and every folder's name (:func:`tree_digest`).

To add a case (a retriever or cost API, say), add one ``Case(...)`` to ``CASES``. ``call`` gets an :class:`Env`:
``env.db`` is a copy of the template store (HashEmbeddings, 40 chunks, a completed active model ``env.job`` and
a failed job ``env.failed_job``), ``env.site`` a local docs site, ``env.ws`` the workspace folder. An optional
``prepare(env)`` damages or arranges things first; the digest is taken after it.
"""
from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import HashEmbeddings, send_reply

from dmhelpers import (CrawlError, DeepMemoryError, Document, EmbeddingError, InputError, LocalEmbeddings,
                       OpenAIEmbeddings, QuestionGenerationError, StoreError, VectorStore, answer, context_recall,
                       generate_questions, get_all_links, get_embedding, get_encoding, html_to_text, load_pages,
                       open_site, set_random_seed, split_documents, split_questions)
from dmhelpers.evaluation.cost import cost_curve, savings
from dmhelpers import load_questions, save_questions  # issue 20: training and questions

EMBEDDER = "test/hash-64"
TOPICS = ["zip archives", "csv rows", "json documents", "regular expressions", "file paths", "dates and times",
          "heaps and queues", "hash digests", "temporary folders", "command lines"]
# Forty chunks with enough prose (20+ words) for generate_questions to ask about.
TEXTS = [f"Chunk {i} explains how the standard library handles {TOPICS[i % 10]} in case {i}: open the object, call "
         f"the method that reads or writes it, check the result and close it again when the work is done {i}."
         for i in range(40)]
IDS = [f"c{i}" for i in range(40)]
QUESTIONS = [f"How do I work with {TOPICS[i % 10]} in case {i}?" for i in range(20)]
RELEVANCE = [[(f"c{i}", 1.0)] for i in range(20)]
CURVE = {"k": [1, 2], "recall": [0.2, 0.4], "prompt_tokens": [100.0, 200.0]}


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256, and every folder: any write, new file or new folder shows."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------------------------- environment
@dataclass
class Env:
    """What a case can use. Everything it could write lives under ``ws``."""

    ws: Path
    path: Path  # the store folder
    site: str  # "http://127.0.0.1:<port>/docs/"
    job: str  # a completed job: the active model
    failed_job: str
    monkeypatch: pytest.MonkeyPatch
    _db: VectorStore | None = field(default=None, repr=False)

    @property
    def db(self) -> VectorStore:
        if self._db is None:
            self._db = VectorStore(self.path, embedding=HashEmbeddings())
        return self._db

    def read_only(self) -> VectorStore:
        return VectorStore(self.path, embedding=HashEmbeddings(), read_only=True)

    @property
    def job_dir(self) -> Path:
        return self.path / "deep_memory" / self.job


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Env], object]
    error: type[Exception]
    problem: str  # regex: what is wrong
    fix: str  # regex: what to do about it
    prepare: Callable[[Env], object] | None = None


def enter(context_manager) -> object:
    """Enter a context manager (``open_site``) the way a ``with`` statement does; errors surface here."""
    with context_manager as value:
        return value


class BadShape(HashEmbeddings):
    """The store's embedder by name, but it returns vectors of the wrong width."""

    def embed(self, texts):
        return super().embed(texts)[:, :10]


class NaNs(HashEmbeddings):
    def embed(self, texts):
        out = super().embed(texts)
        out[0, 0] = float("nan")
        return out


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def fake_llm_env(env: Env) -> None:
    env.monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    env.monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # never reached


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# issue 20: training and questions
def failing_writes(target: str, code: int) -> Callable[[Env], object]:
    """A ``prepare``: every write through ``target`` fails with ``code`` (errno.ENOSPC: a full disk; errno.EROFS: a
    read-only folder), as it would there (root ignores file permissions, so a real read-only folder cannot be used)."""
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return lambda e: e.monkeypatch.setattr(target, fail)


MODEL_WRITES, QUESTION_WRITES = "dmhelpers.deep_memory.repository.atomic_write_bytes", "dmhelpers.questions.qrels.atomic_write_text"


def nan_weights(e: Env) -> None:
    from safetensors.numpy import load, save
    weights = load((e.job_dir / "adapter.safetensors").read_bytes())
    weights["net.weight"][0, 0] = float("nan")
    (e.job_dir / "adapter.safetensors").write_bytes(save(weights))


# ----------------------------------------------------------------------------------------------- the table
CASES: list[Case] = [
    # --- crawl: get_all_links, load_pages, and notebook 01's BASE_URL and MAX_PAGES
    Case("crawl/start-url-without-scheme", lambda e: get_all_links("docs.python.org/3/library/"), InputError,
         r"'docs.python.org/3/library/' is not an http\(s\) URL", r"Pass e.g. 'https://.*BASE_URL = None"),
    Case("crawl/start-page-404", lambda e: get_all_links(e.site + "missing.html", timeout=5), CrawlError,
         r"Could not load the start page .*missing.html.*404", r"Check the URL and the network"),
    Case("crawl/start-page-without-links", lambda e: get_all_links(e.site + "nolinks.html", timeout=5), CrawlError,
         r"has no links under /docs/", r"Start from an index or table-of-contents page"),
    Case("crawl/timeout-zero", lambda e: get_all_links(e.site + "index.html", timeout=0), InputError,
         r"timeout must be a number above 0, got 0", r"seconds, e.g. timeout=10"),
    Case("crawl/load-a-single-url-string", lambda e: load_pages(e.site + "index.html", progress=False), InputError,
         r"takes a list of URLs, got a single string", r"Wrap it: load_pages\(\[url\]\)"),
    Case("crawl/load-no-urls", lambda e: load_pages([], progress=False), CrawlError,
         r"There are no URLs to load", r"Check the links step found pages"),
    Case("crawl/MAX_PAGES=0", lambda e: load_pages([e.site + "index.html"], max_pages=0, progress=False), InputError,
         r"max_pages must be a whole number of at least 1, got 0", r"Use e.g. MAX_PAGES = 20 \(None loads all\)"),
    Case("crawl/MAX_PAGES='20'", lambda e: load_pages([e.site + "index.html"], max_pages="20", progress=False),
         InputError, r"max_pages must be a whole number of at least 1, got '20'", r"Use e.g. MAX_PAGES = 20"),
    Case("crawl/concurrency-zero", lambda e: load_pages([e.site + "index.html"], concurrency=0, progress=False),
         InputError, r"concurrency must be a whole number of at least 1, got 0", r"Use e.g. MAX_PAGES"),
    Case("crawl/every-page-fails", lambda e: load_pages([e.site + "gone1.html", e.site + "gone2.html"],
                                                        progress=False),
         CrawlError, r"None of the 2 pages loaded \(first failure: .*404", r"Check that the site is reachable"),
    Case("crawl/BASE_URL-missing-folder", lambda e: enter(open_site(str(e.ws / "no-such-html"))), CrawlError,
         r"no-such-html is not a folder of HTML files", r"Pass a folder that exists"),
    Case("crawl/BASE_URL=42", lambda e: enter(open_site(42)), InputError,
         r"BASE_URL must be None, an http\(s\) URL or a folder of HTML files, got 42", r"Use BASE_URL = None"),

    # --- text: html_to_text, split_documents, and notebook 01's CHUNK_SIZE and CHUNK_OVERLAP
    Case("text/html-as-bytes", lambda e: html_to_text(b"<p>zip</p>"), InputError,
         r"takes a page's HTML as a str, got bytes", r"decode\('utf-8'\)"),
    Case("text/CHUNK_SIZE='800'", lambda e: split_documents([Document("zip")], "800", 80), InputError,
         r"chunk_size must be a whole number of characters of at least 1, got '800'", r"Use e.g. CHUNK_SIZE = 1000"),
    Case("text/CHUNK_SIZE=-5", lambda e: split_documents([Document("zip")], -5, 0), InputError,
         r"chunk_size must be a whole number of characters of at least 1, got -5", r"Use e.g. CHUNK_SIZE = 1000"),
    Case("text/CHUNK_OVERLAP=CHUNK_SIZE", lambda e: split_documents([Document("zip")], 800, 800), InputError,
         r"chunk_overlap must be a whole number of characters from 0 to 799, got 800", r"smaller than chunk_size \(800\); use e.g. CHUNK_OVERLAP = 80"),
    Case("text/CHUNK_OVERLAP=None", lambda e: split_documents([Document("zip")], 800, None), InputError,
         r"chunk_overlap must be .*got None", r"use e.g. CHUNK_OVERLAP = 80"),
    Case("text/split-plain-strings", lambda e: split_documents(["a page of text"], 800, 80), InputError,
         r"needs Documents with a str .page_content, got str", r"Document\(text, metadata\)"),
    Case("text/split-a-single-document", lambda e: split_documents(Document("a page"), 800, 80), InputError,
         r"takes a list of Documents, got a single Document", r"Wrap it: split_documents\(\["),

    # --- embeddings and notebook 01's EMBEDDING
    Case("embed/EMBEDDING=''", lambda e: get_embedding(""), InputError,
         r"EMBEDDING must be 'local' or a model name, got ''", r"Use EMBEDDING = 'local'"),
    Case("embed/EMBEDDING=None", lambda e: get_embedding(None), InputError,
         r"EMBEDDING must be .*got None", r"Use EMBEDDING = 'local'"),
    Case("embed/openai-single-string", lambda e: OpenAIEmbeddings().embed("one text"), InputError,
         r"takes a list of texts, got a single string", r"Wrap it: embed\(\[text\]\)"),
    Case("embed/local-non-text-item", lambda e: LocalEmbeddings().embed(["ok", None]), InputError,
         r"item 1 is NoneType", r"Convert or drop non-text items"),
    Case("embed/openai-without-key",
         lambda e: VectorStore(e.ws / "new-store", embedding=OpenAIEmbeddings()).add_texts(["x"]), EmbeddingError,
         r"needs OPENAI_API_KEY", r"Set it, or use the offline default EMBEDDING = 'local'",
         prepare=lambda e: e.monkeypatch.delenv("OPENAI_API_KEY", raising=False)),
    Case("embed/wrong-width-vectors", lambda e: VectorStore(e.path, embedding=BadShape()).add_texts(["x"]),
         StoreError, r"returned vectors of shape \(1, 10\), expected \(1, 64\)", r"Fix its embed\(\)"),
    Case("embed/NaN-vectors", lambda e: VectorStore(e.path, embedding=NaNs()).add_texts(["x", "y"]), StoreError,
         r"expected \(2, 64\) finite values", r"no NaN\), or use another embedder"),

    # --- the store and notebook 01's STORE_PATH and OVERWRITE
    Case("store/add-None", lambda e: e.db.add_texts(None), InputError,
         r"takes a list of texts, got None", r"add_texts\(\[text\]\)"),
    Case("store/add-a-number", lambda e: e.db.add_texts(["fine", 5]), InputError,
         r"Text 1 is int", r"Drop empty chunks before adding"),
    Case("store/id-not-a-string", lambda e: e.db.add_texts(["a", "b"], ids=["new-a", 7]), InputError,
         r"Every id must be a non-empty string", r"ids=None to generate them"),
    Case("store/metadatas-of-strings", lambda e: e.db.add_texts(["a"], metadatas=["http://x/a.html"]), InputError,
         r"metadatas must be a list with one dict \(or None\) per text", r"Pass e.g. metadatas=\[\{'source'"),
    Case("store/metadatas-one-dict", lambda e: e.db.add_texts(["a", "b"], metadatas={"source": "x"}), InputError,
         r"metadatas must be a list", r"Pass e.g. metadatas="),
    Case("store/text-with-a-lone-surrogate", lambda e: e.db.add_texts(["fine", "abc\ud800def"]), InputError,
         r"Text 1 holds a lone surrogate '\\ud800' at character 3, which cannot be stored as UTF-8",
         r"Clean it first, e\.g\. text\.encode\('utf-8', 'replace'\)"),
    Case("store/NaN-in-metadata", lambda e: e.db.add_texts(["a"], metadatas=[{"score": float("nan")}]), InputError,
         r"Metadata 0 cannot be stored as JSON \(Out of range float", r"NaN and infinity are not JSON numbers: use "
         r"None or a string"),
    Case("store/add-documents-of-strings", lambda e: e.db.add_documents(["a", "b"]), InputError,
         r"needs objects with .page_content and .metadata", r"Use add_texts\(\) for plain strings"),
    Case("store/STORE_PATH-is-a-file", lambda e: VectorStore(e.ws / "notes.txt", embedding=HashEmbeddings()),
         StoreError, r"notes.txt is a file, not a store folder", r"Choose another STORE_PATH",
         prepare=lambda e: (e.ws / "notes.txt").write_text("my notes")),
    Case("store/STORE_PATH=42", lambda e: VectorStore(42), InputError,
         r"STORE_PATH must be a folder path, a path ending in .db \(Milvus Lite\) or a Milvus URI .*got 42",
         r"Use e\.g\. STORE_PATH = '\.\./data/store'"),
    Case("store/STORE_PATH-of-another-scheme", lambda e: VectorStore("grpc://127.0.0.1:19530"), InputError,
         r"'grpc://127.0.0.1:19530' is not a store this package can open",
         r"use a folder path, a path ending in \.db, or an http:// or https:// Milvus URI"),
    Case("store/collection-name-with-a-dash", lambda e: VectorStore(e.ws / "x.db", collection="my-docs"), InputError,
         r"collection must be a name of letters, digits and underscores .*got 'my-docs'",
         r"Use e\.g\. collection='docs'"),
    Case("store/collection-for-a-folder", lambda e: VectorStore(e.path, collection="docs"), InputError,
         r"collection= only apply to Milvus stores, and '.*store' is a folder \(hnswlib\)",
         r"Pass a path ending in \.db or an http\(s\):// URI for Milvus, or drop the argument"),
    Case("store/OVERWRITE-and-read_only", lambda e: VectorStore(e.path, overwrite=True, read_only=True), InputError,
         r"overwrite=True and read_only=True contradict each other", r"choose one"),
    Case("store/another-embedder", lambda e: VectorStore(e.path, embedding=HashEmbeddings("other/model")),
         StoreError, rf"built with the embedder '{EMBEDDER}', not 'other/model'",
         r"Open it with embedding=None .*or rebuild it"),
    Case("store/another-dimension", lambda e: VectorStore(e.path, embedding=HashEmbeddings(dimension=32)),
         StoreError, r"holds 64-dimensional vectors but .* makes 32-dimensional", r"Use the store's embedder"),
    Case("store/pointer-to-a-missing-snapshot", lambda e: e.db, StoreError,
         r"is damaged: meta.json in v000009 cannot be read", r"Rebuild it with notebook 01",
         prepare=lambda e: edit_json(e.path / "STORE", snapshot="v000009")),
    Case("store/pointer-of-a-future-format", lambda e: e.db, StoreError,
         r"unreadable STORE file \(unknown format 99\)", r"Rebuild it with notebook 01",
         prepare=lambda e: edit_json(e.path / "STORE", format=99)),
    Case("store/meta-disagrees-with-files", lambda e: e.db, StoreError,
         r"files disagree .*meta says 41", r"Rebuild it with notebook 01",
         prepare=lambda e: edit_json(e.path / "v000001" / "meta.json", count=41)),
    # issue 20: store
    Case("store/embedding-a-name", lambda e: VectorStore(e.path, embedding=EMBEDDER), InputError,
         r"embedding= takes an embedder object, got the string 'test/hash-64'",
         r"Pass embedding=get_embedding\('test/hash-64'\), or e\.g\. embedding=LocalEmbeddings\(\)"),
    Case("store/embedding-an-object", lambda e: VectorStore(e.path, embedding=object()), InputError,
         r"embedding= must be an embedder \(with \.name, \.dimension and \.embed\(texts\)\), got object",
         r"Pass e\.g\. embedding=LocalEmbeddings\(\)"),
    Case("store/ids-a-single-string", lambda e: e.db.add_texts(["x", "y"], ids="ab"), InputError,
         r"ids must be a list with one string per text, got a single str 'ab'", r"Pass e\.g\. ids=\['chunk-1'"),
    Case("store/M=-5", lambda e: VectorStore(e.ws / "new-store", embedding=HashEmbeddings(), M=-5), InputError,
         r"M must be a whole number of links per node from 2 to 100, got -5", r"Use e\.g\. M=16"),
    Case("store/M='16'", lambda e: VectorStore(e.ws / "new-store", embedding=HashEmbeddings(), M="16"), InputError,
         r"M must be a whole number .*got '16'", r"Use e\.g\. M=16"),
    Case("store/M-huge", lambda e: VectorStore(e.ws / "new-store", embedding=HashEmbeddings(), M=10**9), InputError,
         r"M must be a whole number .*from 2 to 100, got 1000000000", r"Use e\.g\. M=16"),
    Case("store/ef='x'", lambda e: VectorStore(e.path, embedding=HashEmbeddings(), ef="x"), InputError,
         r"ef must be a whole number of candidates from 1 to 100000, got 'x'", r"Use e\.g\. ef=100"),
    Case("store/pointer-a-list", lambda e: e.db, StoreError,
         r"unreadable STORE file \(it holds list, not an object\)", r"Rebuild it with notebook 01",
         prepare=lambda e: (e.path / "STORE").write_text("[1]")),
    Case("store/pointer-without-a-snapshot", lambda e: e.db, StoreError,
         r"unreadable STORE file \(snapshot None is not a snapshot name of this folder", r"Rebuild it with notebook 01",
         prepare=lambda e: (e.path / "STORE").write_text(json.dumps({"format": 1, "version": 1}))),
    Case("store/pointer-outside-the-folder", lambda e: e.db, StoreError,
         r"unreadable STORE file \(snapshot '\.\./other/v000001' is not a snapshot name of this folder \(v and 6 "
         r"digits\)\)", r"Rebuild it with notebook 01",
         prepare=lambda e: (shutil.copytree(e.path / "v000001", e.ws / "other" / "v000001"),
                            edit_json(e.path / "STORE", snapshot="../other/v000001"))),
    Case("store/pointer-an-absolute-path", lambda e: e.db, StoreError,
         r"unreadable STORE file \(snapshot '/.*/v000001' is not a snapshot name", r"Rebuild it with notebook 01",
         prepare=lambda e: edit_json(e.path / "STORE", snapshot=str(e.path / "v000001"))),
    Case("store/meta-without-index", lambda e: e.db, StoreError,
         r"is damaged: meta.json in v000001 is not valid \(no valid index parameters: None\)",
         r"Rebuild it with notebook 01",
         prepare=lambda e: (e.path / "v000001" / "meta.json").write_text(json.dumps(
             {k: v for k, v in json.loads((e.path / "v000001" / "meta.json").read_text()).items() if k != "index"}))),
    Case("store/meta-a-list", lambda e: e.db, StoreError,
         r"is damaged: meta.json in v000001 is not valid \(it holds list, not an object\)",
         r"Rebuild it with notebook 01", prepare=lambda e: (e.path / "v000001" / "meta.json").write_text("[1, 2]")),
    Case("store/record-not-an-object", lambda e: e.db, StoreError,
         r"is damaged: record 0 of records.jsonl is not an object with a string id and text",
         r"Rebuild it with notebook 01", prepare=lambda e: (e.path / "v000001" / "records.jsonl").write_text(
             "[1]\n" + (e.path / "v000001" / "records.jsonl").read_text().split("\n", 1)[1])),
    Case("store/embeddings-all-zero-bytes", lambda e: e.db, StoreError,
         r"is damaged: embeddings.npy in v000001 is not a NumPy array file\. ", r"Rebuild it with notebook 01",
         prepare=lambda e: (e.path / "v000001" / "embeddings.npy").write_bytes(
             bytes((e.path / "v000001" / "embeddings.npy").stat().st_size))),

    # --- generate_questions, split_questions and notebook 02's N_QUESTIONS, QUESTIONS_PER_CHUNK, TRAIN_FRACTION, LLM
    Case("generate/N_QUESTIONS='200'", lambda e: generate_questions(e.db.texts, e.db.ids, "200"), InputError,
         r"n must be a whole number of questions of at least 1, got '200'", r"Use e.g. N_QUESTIONS = 200"),
    Case("generate/N_QUESTIONS-more-than-chunks", lambda e: generate_questions(e.db.texts, e.db.ids, 500),
         InputError, r"n = 500 questions asked for, but only 40 of 40 chunks",
         r"Use a smaller N_QUESTIONS \(at most 40\)"),
    Case("generate/QUESTIONS_PER_CHUNK='3'", lambda e: generate_questions(e.db.texts, e.db.ids, 5, per_chunk="3"),
         InputError, r"per_chunk must be a whole number of questions per chunk of at least 1, got '3'", r"QUESTIONS_PER_CHUNK = 1"),
    Case("generate/texts-None", lambda e: generate_questions(None, None, 5), InputError,
         r"texts and ids must be lists .*got NoneType and NoneType", r"Pass the store's db.texts and db.ids"),
    Case("generate/LLM-without-key",
         lambda e: generate_questions(e.db.texts, e.db.ids, 5, llm="gpt-4o-mini",
                                      cache=e.path / "questions" / "llm-cache.jsonl"),
         QuestionGenerationError, r"LLM = 'gpt-4o-mini' needs OPENAI_API_KEY", r"use LLM = 'simulated'",
         prepare=lambda e: e.monkeypatch.delenv("OPENAI_API_KEY", raising=False)),
    Case("generate/cache-is-a-folder",
         lambda e: generate_questions(e.db.texts, e.db.ids, 5, llm="fake-model", cache=e.path / "deep_memory"),
         InputError, r"cache='.*deep_memory' is a folder; it must be a file path", r"Pass e.g. '.*llm-cache.jsonl'",
         prepare=fake_llm_env),
    Case("generate/TRAIN_FRACTION='0.5'", lambda e: split_questions(QUESTIONS, RELEVANCE, "0.5"), InputError,
         r"train_fraction must be a number between 0 and 1 \(exclusive\), got '0.5'", r"Use e.g. TRAIN_FRACTION = 0.5"),
    Case("notebooks/SEED='0'", lambda e: set_random_seed("0"), InputError,
         r"SEED must be a whole number .*got '0'", r"Use e.g. SEED = 0"),

    # --- deep_memory.train and notebook 02's EPOCHS and LEARNING_RATE
    Case("train/EPOCHS=0", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=0), InputError,
         r"epochs must be a whole number of at least 1, got 0", r"Use e.g. EPOCHS = 30"),
    Case("train/EPOCHS='thirty'", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, epochs="thirty"),
         InputError, r"epochs must be a whole number of at least 1, got 'thirty'", r"Use e.g. EPOCHS = 30"),
    Case("train/LEARNING_RATE=-0.1", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, learning_rate=-0.1),
         InputError, r"learning_rate must be a number above 0, got -0.1", r"LEARNING_RATE = 0.003"),
    Case("train/LEARNING_RATE=None", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, learning_rate=None),
         InputError, r"learning_rate must be a number above 0, got None", r"LEARNING_RATE = 0.003"),
    Case("train/misspelt-option", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, epoch=3), InputError,
         r"Unknown training option\(s\) \['epoch'\]", r"Options: \['epochs'"),
    Case("train/one-fold", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, folds=1), InputError,
         r"folds must be a whole number of at least 2, got 1", r"The default is 4"),
    Case("train/score-not-a-number", lambda e: e.db.deep_memory.train(QUESTIONS, [[("c1", "high")]] * 20),
         InputError, r"Relevance of query 0 .*got \('c1', 'high'\)", r"must be \(chunk_id, score\) pairs"),
    Case("train/only-zero-scores", lambda e: e.db.deep_memory.train(QUESTIONS, [[("c1", 0.0)]] * 20), InputError,
         r"Query 0 has only zero scores", r"give at least one chunk a score above 0"),
    Case("train/read-only-store", lambda e: e.read_only().deep_memory.train(QUESTIONS, RELEVANCE), StoreError,
         r"was opened with read_only=True", r"Open it with read_only=False to train"),

    # --- deep_memory.evaluate
    Case("evaluate/top_k-zero", lambda e: e.db.deep_memory.evaluate(QUESTIONS, RELEVANCE, top_k=[0, 10]),
         InputError, r"top_k must be a list of whole numbers of at least 1, got \[0, 10\]", r"Use e.g. top_k=\[1, 3, 5"),
    Case("evaluate/top_k-a-number", lambda e: e.db.deep_memory.evaluate(QUESTIONS, RELEVANCE, top_k=10),
         InputError, r"top_k must be a list .*got 10", r"Use e.g. top_k=\["),
    Case("evaluate/top_k-beyond-the-store", lambda e: e.db.deep_memory.evaluate(QUESTIONS, RELEVANCE, top_k=[100000]),
         InputError, r"top_k=\[100000\] asks only for recall at more chunks than the store's 40",
         r"Use values from 1 to 40, e\.g\. top_k=\[1, 3, 5, 10\]"),
    Case("evaluate/no-queries", lambda e: e.db.deep_memory.evaluate([], []), InputError,
         r"Got no queries", r"Generate questions first \(notebook 02\)"),
    Case("evaluate/unknown-chunk", lambda e: e.db.deep_memory.evaluate(["q?"], [[("c999", 1.0)]]), InputError,
         r"names chunk id 'c999', which is not in this store", r"Use ids from db.ids"),

    # --- deep_memory.set_model
    Case("set_model/unknown-job", lambda e: e.db.deep_memory.set_model("job-nope"), InputError,
         r"Unknown job id 'job-nope'", r"Pass one of this store's jobs \(db.deep_memory.list_jobs\(\)\): job-"),
    Case("set_model/None", lambda e: e.db.deep_memory.set_model(None), InputError,
         r"Unknown job id None", r"Pass one of this store's jobs"),
    Case("set_model/failed-job", lambda e: e.db.deep_memory.set_model(e.failed_job), InputError,
         r"is failed, not completed", r"Choose a completed job .*or train again"),
    Case("set_model/read-only-store", lambda e: e.read_only().deep_memory.set_model(e.job), StoreError,
         r"was opened with read_only=True", r"Open it with read_only=False"),
    Case("set_model/weights-missing", lambda e: e.db.deep_memory.set_model(e.job), StoreError,
         r"model files of job .* are missing or damaged \(FileNotFoundError", r"Train a new model",
         prepare=lambda e: (e.job_dir / "adapter.safetensors").unlink()),
    Case("set_model/weights-damaged", lambda e: e.db.deep_memory.set_model(e.job), StoreError,
         r"model files of job .* are missing or damaged", r"Train a new model, or choose another job",
         prepare=lambda e: (e.job_dir / "adapter.safetensors").write_bytes(b"\x80\x04not safetensors")),
    Case("set_model/job-record-damaged", lambda e: e.db.deep_memory.set_model(e.job), StoreError,
         r"The record of job .* is damaged", r"Train a new model",
         prepare=lambda e: (e.job_dir / "job.json").write_text("{torn")),
    Case("search/none", lambda e: e.db.search(None), InputError,
         r"search\(\) needs a non-empty question", r"or a list of non-empty questions"),
    Case("set_model/interrupted-job", lambda e: e.db.deep_memory.set_model(e.failed_job), InputError,
         r"is interrupted, not completed", r"Choose a completed job",
         prepare=lambda e: edit_json(e.path / "deep_memory" / e.failed_job / "job.json", status="training")),
    # --- retriever and answers (notebook 04's K and LLM)
    Case("retriever/k-zero", lambda e: e.db.as_retriever(k=0), InputError,
         r"k must be a whole number of chunks to retrieve of at least 1, got 0", r"Use e\.g\. k=10"),
    Case("retriever/deep-memory-without-a-model", lambda e: e.db.as_retriever(k=5, deep_memory=True), InputError,
         r"needs a trained model", r"run db\.deep_memory\.train\(\.\.\.\) first .*or use deep_memory=False",
         prepare=lambda e: (e.path / "deep_memory" / "ACTIVE").unlink()),
    Case("answer/empty-question", lambda e: answer("   ", e.db.as_retriever()), InputError,
         r"needs a non-empty question", r"non-empty question"),
    Case("answer/a-store-not-a-retriever", lambda e: answer("How do I read csv rows?", e.db), InputError,
         r"needs a retriever", r"db\.as_retriever\(k=\.\.\., deep_memory=\.\.\.\)"),
    Case("answer/llm-without-key", lambda e: (e.monkeypatch.delenv("OPENAI_API_KEY", raising=False),
                                              answer("How?", e.db.as_retriever(), llm="gpt-4o-mini"))[1],
         InputError, r"needs OPENAI_API_KEY", r"use LLM = 'offline' for extractive answers"),
    # --- cost and tokens (notebook 05's MAX_K, BASELINE_K, PRICE_PER_MTOK, PRICE_MODEL)
    Case("cost/k-beyond-the-store", lambda e: cost_curve(e.db, QUESTIONS, RELEVANCE, [1, 41], False,
                                                           get_encoding("cl100k_base")), InputError,
         r"ks must be whole numbers from 1 to the store's 40 chunks", r"from 1 to"),
    Case("cost/baseline-k-not-measured", lambda e: savings(CURVE, CURVE, 10, 0.15), InputError,
         r"BASELINE_K=10 is not among the measured k", r"add it to the k values"),
    Case("cost/negative-price", lambda e: savings(CURVE, CURVE, 2, -1.0), InputError,
         r"PRICE_PER_MTOK must be a price per million input tokens", r">= 0"),
    Case("tokens/unknown-tokenizer", lambda e: get_encoding("my-own-model"), InputError,
         r"Unknown tokenizer 'my-own-model'", r"Use an encoding .*or an OpenAI model name"),
    # --- RAGAS context recall (notebook 03's RAGAS_K and LLM)
    Case("ragas/unknown-chunk", lambda e: context_recall(e.db, ["How?"], [[("c999", 1.0)]]), InputError,
         r"chunk ids not in this store, e\.g\. 'c999'", r"Use questions made for this store"),
    Case("ragas/k-zero", lambda e: context_recall(e.db, QUESTIONS, RELEVANCE, k=0), InputError,
         r"k must be a whole number of chunks to retrieve of at least 1", r"RAGAS_K = 10"),
    Case("ragas/mismatched-lists", lambda e: context_recall(e.db, QUESTIONS, RELEVANCE[:3]), InputError,
         r"one relevance list per question", r"as load_questions returns them"),
    Case("ragas/llm-without-key", lambda e: (e.monkeypatch.delenv("OPENAI_API_KEY", raising=False),
                                             context_recall(e.db, QUESTIONS, RELEVANCE, llm="gpt-4o-mini"))[1],
         InputError, r"needs OPENAI_API_KEY", r"use LLM = 'offline' for ragas' non-LLM metrics"),
    # issue 20: training and questions
    Case("train/relevance-None", lambda e: e.db.deep_memory.train(QUESTIONS, None), InputError,
         r"relevance must be a list with one list of \(chunk_id, score\) pairs per question, got None",
         r"Pass e\.g\. what generate_questions or load_questions returns"),
    Case("train/relevance-an-int", lambda e: e.db.deep_memory.train(QUESTIONS, 5), InputError,
         r"relevance must be a list .*got 5", r"Pass e\.g\. what generate_questions or load_questions returns"),
    Case("train/relevance-list-an-int", lambda e: e.db.deep_memory.train(QUESTIONS, [5] * 20), InputError,
         r"Relevance of query 0 must be a list of \(chunk_id, score\) pairs, got 5", r"e\.g\. \[\('c1', 1\.0\)\]"),
    Case("train/chunk-id-a-list", lambda e: e.db.deep_memory.train(QUESTIONS, [[(["c1"], 1.0)]] * 20), InputError,
         r"names the chunk id \['c1'\], which is not a string", r"Chunk ids are the strings of db\.ids"),
    Case("train/queries-None", lambda e: e.db.deep_memory.train(None, RELEVANCE), InputError,
         r"queries must be a list of questions, got None", r"Pass e\.g\. what generate_questions or load_questions"),
    Case("train/all-about-one-chunk", lambda e: e.db.deep_memory.train(QUESTIONS, [[("c3", 1.0)]] * 20), InputError,
         r"The 20 training questions are all about one chunk \('c3'\)", r"Write questions about more chunks"),
    Case("train/LEARNING_RATE=1e30", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, learning_rate=1e30),
         InputError, r"learning_rate=1e\+30 is far too large: training diverges", r"Use at most 10, e\.g\. LEARNING_RATE"),
    Case("train/disk-full", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2), StoreError,
         r"The disk is full: could not write .*job-[-0-9]+/job\.json \(No space left on device\)",
         r"Free space on the disk .*nothing was half-written and the active model is unchanged",
         prepare=failing_writes(MODEL_WRITES, errno.ENOSPC)),
    Case("train/read-only-folder", lambda e: e.db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2), StoreError,
         r"The folder .*deep_memory is read-only: could not write .*job\.json \(Read-only file system\)",
         r"Make the folder writable, or copy the store to a writable folder .*active model is unchanged",
         prepare=failing_writes(MODEL_WRITES, errno.EROFS)),
    Case("set_model/read-only-folder", lambda e: e.db.deep_memory.set_model(e.job),
         StoreError, r"The folder .*deep_memory is read-only: could not write .*ACTIVE", r"Make the folder writable",
         prepare=failing_writes(MODEL_WRITES, errno.EROFS)),
    Case("set_model/NaN-in-job.json", lambda e: e.db.deep_memory.set_model(e.job), StoreError,
         r"The model record of job .* is damaged: alpha_out is not a finite number",
         r"Retrain \(db\.deep_memory\.train\(\.\.\.\)\), or choose another job",
         prepare=lambda e: edit_json(e.job_dir / "job.json", alpha_out=float("nan"))),
    Case("set_model/NaN-in-weights", lambda e: e.db.deep_memory.set_model(e.job), StoreError,
         r"The model record of job .* is damaged: net\.weight is not a finite number", r"Retrain .*or choose another job",
         prepare=nan_weights),
    Case("search/active-model-with-NaN", lambda e: e.db.search("zip archives", deep_memory=True), DeepMemoryError,
         r"needs a trained model.*The stored model cannot be used: The model record of job .* is damaged: alpha is "
         r"not a finite number", r"Retrain \(db\.deep_memory\.train\(\.\.\.\)\), or choose another job",
         prepare=lambda e: edit_json(e.job_dir / "job.json", alpha=float("inf"))),
    Case("questions/save-None", lambda e: save_questions(e.ws / "q.jsonl", None, None), InputError,
         r"questions must be a list of questions, got None", r"Pass e\.g\. what generate_questions"),
    Case("questions/split-None", lambda e: split_questions(None, None), InputError,
         r"questions must be a list of questions, got None", r"Pass e\.g\. what generate_questions"),
    Case("questions/save-ids-not-pairs", lambda e: save_questions(e.ws / "q.jsonl", ["How?"], [["c1"]]), InputError,
         r"Relevance of query 0 must be \(chunk_id, score\) pairs, got 'c1'", r"Write each as \(chunk_id, score\)"),
    Case("questions/save-NaN-score", lambda e: save_questions(e.ws / "q.jsonl", ["How?"], [[("c1", float("nan"))]]),
         InputError, r"Relevance score nan of query 0 is outside \[0, 1\]", r"Use 1\.0 for relevant"),
    Case("questions/save-disk-full", lambda e: save_questions(e.path / "questions" / "train.jsonl", QUESTIONS,
                                                              RELEVANCE), StoreError,
         r"The disk is full: could not write .*questions/train\.jsonl", r"Free space on the disk .*nothing was written",
         prepare=failing_writes(QUESTION_WRITES, errno.ENOSPC)),
    Case("questions/save-read-only", lambda e: save_questions(e.ws / "train.jsonl", QUESTIONS, RELEVANCE), StoreError,
         r"The folder .*ws is read-only: could not write .*train\.jsonl", r"save the questions in a writable folder",
         prepare=failing_writes(QUESTION_WRITES, errno.EROFS)),
    Case("questions/load-a-folder", lambda e: load_questions(e.path), InputError,
         r"store is a folder, not a question file", r"Pass the file, e\.g\. '.*train\.jsonl'"),
    Case("questions/load-latin-1", lambda e: load_questions(e.ws / "latin1.jsonl"), InputError,
         r"latin1\.jsonl is not UTF-8 text", r"must be UTF-8 JSON lines as save_questions writes them",
         prepare=lambda e: (e.ws / "latin1.jsonl").write_bytes('{"question": "Qu\'est-ce qu\'un caf\xe9?"}\n'.encode("latin-1"))),
    Case("questions/load-binary", lambda e: load_questions(e.ws / "q.jsonl"), InputError,
         r"q\.jsonl is not UTF-8 text", r"Rerun notebook 02 to rewrite it",
         prepare=lambda e: (e.ws / "q.jsonl").write_bytes(b"\x80\x04\x95\x00\xff pickle")),
]


# ----------------------------------------------------------------------------------------------- fixtures
SITE = {
    "/docs/index.html": '<html><title>Docs</title><a href="a.html">A</a> <a href="b.html">B</a></html>',
    "/docs/nolinks.html": '<html><title>None</title><p>No links here. <a href="/elsewhere/x.html">out</a></p></html>',
}


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = SITE.get(self.path)
        send_reply(self, 200 if body else 404, body or "not found")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/docs/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, str, str]:
    """A store with 40 chunks, a completed (active) model and a failed job; each case works on a copy."""
    path = tmp_path_factory.mktemp("template") / "store"
    db = VectorStore(path, embedding=HashEmbeddings())
    db.add_texts(TEXTS, metadatas=[{"source": f"http://site/{i}.html"} for i in range(40)], ids=IDS)
    job = db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("dmhelpers.deep_memory.jobs.train_adapter", lambda *a, **k: 1 / 0)
        with pytest.raises(DeepMemoryError, match="failed: ZeroDivisionError"):
            db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2)
    failed = next(j["id"] for j in db.deep_memory.list_jobs() if j["status"] == "failed")
    assert db.deep_memory.get_model() == job
    return path, job, failed


def test_the_table_is_big_and_its_ids_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_nothing(case, template, site, tmp_path, monkeypatch):
    source, job, failed = template
    ws = tmp_path / "ws"
    shutil.copytree(source.parent, ws)
    env = Env(ws=ws, path=ws / "store", site=site, job=job, failed_job=failed, monkeypatch=monkeypatch)
    if case.prepare:
        case.prepare(env)
    before = tree_digest(ws)

    with pytest.raises(case.error) as info:
        case.call(env)

    err = info.value
    assert type(err) is case.error, f"{type(err).__name__}: {err}"
    assert isinstance(err, DeepMemoryError)
    message = str(err)
    assert re.search(case.problem, message, re.S), f"the problem is not named: {message}"
    assert re.search(case.fix, message, re.S), f"the fix is not named: {message}"
    assert tree_digest(ws) == before, "the store folder changed"


def test_the_store_still_works_after_every_refusal(template, tmp_path, site, monkeypatch):
    """Refusals on one open store in a row leave it usable: it still searches, trains and reopens the same."""
    source, job, failed = template
    shutil.copytree(source.parent, tmp_path / "ws")
    env = Env(ws=tmp_path / "ws", path=tmp_path / "ws" / "store", site=site, job=job, failed_job=failed,
              monkeypatch=monkeypatch)
    for case in CASES:
        if case.prepare is None and "db" in case.call.__code__.co_names:
            with pytest.raises(case.error):
                case.call(env)
    db = env.db
    assert len(db) == 40 and db.ids == IDS and db.deep_memory.get_model() == job
    assert db.search("zip archives in case 10", k=1)[0].id == "c10"
    db.add_texts(["a new chunk about heaps"], ids=["new"])
    assert VectorStore(env.path, embedding=HashEmbeddings(), read_only=True).ids == IDS + ["new"]
