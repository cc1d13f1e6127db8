"""Stores the benchmarks need, built with the same package steps notebook 01 runs (a helper module, not a
benchmark itself; imported as ``stores`` by the scripts in ``bench/``)."""
from __future__ import annotations

from pathlib import Path

from dmhelpers import (VectorStore, get_all_links, get_embedding, load_pages, open_site, pages_to_documents,
                       preset_pages, split_documents, unique_documents)


def build_store(path: str | Path, preset: str | None = None, chunk_size: int = 800, chunk_overlap: int = 80,
                docs_cache: str | Path = "data/python-docs") -> VectorStore:
    """Notebook 01 on the offline docs site: links, pages, text, chunks, embeddings, store (replacing ``path``)."""
    keep = preset_pages(preset)
    with open_site(None, cache=docs_cache) as start:
        links = [link for link in get_all_links(start) if keep is None or link.rsplit("/", 1)[-1] in keep]
        pages, _ = load_pages(links)
    chunks = unique_documents(split_documents(pages_to_documents(pages), chunk_size=chunk_size,
                                              chunk_overlap=chunk_overlap))
    db = VectorStore(path, embedding=get_embedding("local"), overwrite=True)
    db.add_documents(chunks)
    return db


def ensure_store(path: str | Path, preset: str | None = None) -> None:
    """Build the store at ``path`` unless one is there."""
    if not (Path(path) / "STORE").exists():
        print(f"building {path} (notebook 01 with PRESET = {preset!r}) ...", flush=True)
        build_store(path, preset)
