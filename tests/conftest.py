"""Shared fixtures, and one place for the kernel name and timeouts (overridable by environment variables).

The tests come in tiers, one folder each, marked by folder: ``unit`` (fast, ``make test-fast``), ``safety`` (bad
input, crashes, LLM errors, resource limits, properties), ``backends`` (the store suite on hnswlib, Milvus Lite, a
``milvus-lite server`` and a real ``milvus-server``), ``local_llm`` (the LLM path against the real local chat server)
and ``notebooks`` (the notebooks run through papermill).
Helpers are in ``helpers.py``.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network; read when huggingface_hub is imported
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

import functools
import http.server
import threading
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PAGES, TEXTS, LiteServer, RotatedTask, SiteHandler, build_rotated_store

from dmhelpers import LocalEmbeddings, VectorStore

TIERS = ("unit", "safety", "backends", "local_llm", "notebooks")


def pytest_collection_modifyitems(items) -> None:
    """Mark each test with its tier, the folder it is in."""
    for item in items:
        tier = next((t for t in TIERS if f"{os.sep}{t}{os.sep}" in str(item.path)), None)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def python_docs(tmp_path_factory) -> Path:
    """The offline Python docs site, rendered once per session for the notebook runs (``DOCS_CACHE``); rendering
    itself is tested in ``tests/unit/test_docsite.py``."""
    from dmhelpers import build_python_docs

    return build_python_docs(tmp_path_factory.mktemp("python-docs"))


@pytest.fixture(scope="session")
def embedder() -> LocalEmbeddings:
    """The real default embedder, loaded once per test session."""
    return LocalEmbeddings(show_progress=False)


@pytest.fixture()
def store(tmp_path, embedder) -> VectorStore:
    """A hnswlib store of the six :data:`helpers.TEXTS`, with metadata ``{"n": i}``."""
    db = VectorStore(tmp_path / "store", embedding=embedder)
    db.add_texts(TEXTS, metadatas=[{"n": i} for i in range(len(TEXTS))])
    return db


@pytest.fixture()
def tiny_site(tmp_path: Path) -> Iterator[str]:
    """A tiny docs site on 127.0.0.1 with good pages, a 404, a slow page, a PDF and off-site links."""
    for rel, body in PAGES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    (tmp_path / "docs/slow.html").write_text("<html><title>Slow</title><body>slow</body></html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SiteHandler, directory=str(tmp_path)))
    server.handle_error = lambda *args: None  # clients that time out or stop reading close early: expected here
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/docs/index.html"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def rotated_store(tmp_path):
    return build_rotated_store(tmp_path / "rotated", RotatedTask())


@pytest.fixture(scope="session")
def lite_server(tmp_path_factory) -> Iterator[LiteServer]:
    """One ``milvus-lite server`` on 127.0.0.1 for the session (each test uses collections of its own)."""
    server = LiteServer(tmp_path_factory.mktemp("milvus-lite-server") / "data")
    yield server
    server.stop()


_collections = itertools.count()


@pytest.fixture(params=["hnswlib", "milvus-lite", "milvus-server"])
def open_store(request, tmp_path) -> Callable[..., Any]:
    """``open_store(name="store", **kwargs)`` opens the named store of this test on the backend of the parameter:
    a folder (hnswlib), a ``.db`` file (Milvus Lite) or a collection on the session's ``milvus-lite server``."""
    backend, opened = request.param, []
    prefix = f"t{next(_collections)}"

    def open_(name: str = "store", **kwargs: Any):
        if backend == "hnswlib":
            db = VectorStore(tmp_path / name, **kwargs)
        elif backend == "milvus-lite":
            db = VectorStore(tmp_path / f"{name}.db", **kwargs)
        else:
            server = request.getfixturevalue("lite_server")
            kwargs.setdefault("folder", tmp_path / f"{name}-files")  # not the user's cache folder
            db = VectorStore(server.uri, collection=f"{prefix}_{name.replace('-', '_')}", **kwargs)
        opened.append(db)
        return db

    open_.backend = backend
    yield open_
    for db in opened:
        db.close()
