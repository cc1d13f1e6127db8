"""Real text and cached embeddings for the benchmarks (a helper module, not a benchmark itself).

The benchmarks need far more real text than the default corpus's 1,710 chunks: graph indexes behave very
differently on real embeddings than on random vectors. Besides the default store's chunks this module
collects short passages of real English technical prose that every machine with ``.venv`` has:

- the sentences of every docstring (module, class, function) in the standard library and in the packages
  installed in ``.venv`` (read with ``ast``, nothing is imported), and
- the sentences of pydoc's language-reference topics,

kept when 40-250 characters long (about 25 word pieces on average) and mostly letters, de-duplicated and
shuffled with a fixed seed (about 270k of them with this project's .venv). Sentences rather than paragraphs keep the one-time
embedding affordable: the model's cost grows with the word pieces it reads.

The store's chunks keep the vectors the store holds. The passages and their vectors are cached under
``data/bench-cache/`` (delete it to rebuild): ``passages-<key>.json`` (keyed by the files read) and
``emb-<model>-<key>.npy`` (one file per block of 10,000 texts, keyed by a hash of the block's texts and the
model), so only the first run collects (about 2 minutes) and embeds (about 100k sentences at 65-170 per second
on 2 shared cores: 10-30 minutes) and an interrupted run keeps the blocks it finished.

The benchmarks run as ``python bench/NAME.py``, which puts ``bench/`` on ``sys.path``; they import this
module as ``realtext``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CACHE = Path(__file__).resolve().parent.parent / "data" / "bench-cache"
BLOCK = 10_000  # texts per cached embedding file
MIN_CHARS, MAX_CHARS = 40, 250
_VERSION = "2"  # bump when the passage rules below change
HELD_OUT = 5_000  # passages reserved for queries, never in a corpus


# ---------------------------------------------------------------------------------------------- passages
def _source_files() -> list[Path]:
    """Every .py file of the standard library and of .venv's site-packages, tests excluded, in a fixed order."""
    paths = sysconfig.get_paths()
    stdlib, site = Path(paths["stdlib"]), Path(paths["purelib"])
    files = []
    for root in (stdlib, site):
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root).parts
            if root == stdlib and rel[0] == "site-packages":
                continue
            if any(part in ("test", "tests", "testing", "idle_test") for part in rel[:-1]):
                continue
            files.append(p)
    return files


def _clean(paragraph: str) -> str | None:
    text = " ".join(paragraph.split())
    if not MIN_CHARS <= len(text) <= MAX_CHARS or text.startswith((">>>", "..", "$ ", "::")):
        return None
    if sum(c.isalpha() or c == " " for c in text) < 0.8 * len(text):
        return None  # code, tables, signatures
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"(])")


def _sentences(text: str) -> list[str]:
    """The sentences of each paragraph of ``text`` that pass :func:`_clean`."""
    sentences = (s for p in re.split(r"\n\s*\n", text) for s in _SENTENCE_END.split(" ".join(p.split())))
    return [t for t in map(_clean, sentences) if t]


def _docstring_passages(files: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in files:
        try:
            tree = ast.parse(Path(name).read_bytes())
        except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    out.extend(_sentences(doc))
    return out


def passages(verbose: bool = True) -> list[str]:
    """All passages (de-duplicated, shuffled with seed 0), cached in ``data/bench-cache/``."""
    files = _source_files()
    key = hashlib.sha256(f"{_VERSION} {sys.version}".encode())
    for p in files:
        key.update(f"{p}\0{p.stat().st_size}\0".encode())
    cache = CACHE / f"passages-{key.hexdigest()[:16]}.json"
    if cache.exists():
        return json.loads(cache.read_text("utf-8"))
    others = sorted(CACHE.glob("passages-*.json"), key=lambda p: p.stat().st_mtime)
    if others and os.environ.get("DM_BENCH_FRESH_PASSAGES") != "1":
        # The key covers every installed file, so another checkout or one new package would re-collect and
        # re-embed everything (10-30 min). The benchmarks need real text, not this exact text: reuse it.
        if verbose:
            print(f"using the cached passages {others[-1].name} (collected with other installed packages; "
                  "DM_BENCH_FRESH_PASSAGES=1 collects anew)", flush=True)
        return json.loads(others[-1].read_text("utf-8"))
    if verbose:
        print(f"collecting passages from {len(files):,} source files (once; cached in {cache}) ...", flush=True)
    start = time.perf_counter()
    from pydoc_data.topics import topics

    found = [t for key_ in sorted(topics) for t in _sentences(topics[key_])]
    names = [str(p) for p in files]
    parts = [names[i::64] for i in range(64)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for chunk in pool.map(_docstring_passages, parts):
            found.extend(chunk)
    unique = sorted(set(found))
    random.Random(0).shuffle(unique)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(unique, ensure_ascii=False), "utf-8")
    tmp.replace(cache)
    if verbose:
        print(f"  {len(unique):,} passages in {time.perf_counter() - start:.0f} s", flush=True)
    return unique


class Corpus(NamedTuple):
    """Texts and their normalised vectors: the corpus (store chunks first) and held-out query passages."""

    texts: list[str]
    vectors: np.ndarray
    query_texts: list[str]
    query_vectors: np.ndarray
    embedding: Any  # the store's embedder
    n_store: int  # how many of ``texts`` are the store's chunks


def load_corpus(store: str, n_corpus: int, n_queries: int, verbose: bool = True) -> Corpus:
    """``n_corpus`` texts (the store's chunks, then passages) and ``n_queries`` held-out passages, embedded.

    The first ``HELD_OUT`` shuffled passages are reserved for queries, so no corpus ever contains them, and a
    smaller corpus is a prefix of a larger one (their cached vectors are shared).
    """
    from dmhelpers import VectorStore

    db = VectorStore(store, read_only=True)
    chunks = db.texts[:n_corpus]
    taken = set(db.texts)
    pool = [p for p in passages(verbose) if p not in taken]
    if n_queries > HELD_OUT:
        raise SystemExit(f"at most {HELD_OUT:,} held-out query passages; ask for fewer")
    n_rest = max(0, n_corpus - len(chunks))
    queries, rest = pool[:n_queries], pool[HELD_OUT:HELD_OUT + n_rest]
    if len(chunks) + len(rest) < n_corpus:
        raise SystemExit(f"only {len(chunks) + len(pool) - HELD_OUT:,} texts are available; ask for fewer")
    # Whole blocks (the last one may run past the corpus), so every corpus size shares the same cache files.
    blocks = pool[HELD_OUT:HELD_OUT + -(-n_rest // BLOCK) * BLOCK]
    vectors = np.concatenate([db.embeddings[:len(chunks)], embed_cached(blocks, db.embedding, verbose)[:n_rest]])
    return Corpus(chunks + rest, vectors, queries, embed_cached(queries, db.embedding, verbose), db.embedding,
                  len(chunks))


def questions_cached(texts: Sequence[str], ids: Sequence[str], n: int, per_chunk: int = 1, seed: int = 0
                     ) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """``generate_questions`` (offline) with its result cached in ``data/bench-cache/`` (it is deterministic)."""
    from dmhelpers import generate_questions

    digest = hashlib.sha256(f"{_VERSION} {n} {per_chunk} {seed}".encode())
    for i, t in zip(ids, texts):
        digest.update(i.encode() + b"\0" + t.encode() + b"\0")
    path = CACHE / f"questions-{digest.hexdigest()[:16]}.json"
    if path.exists():
        data = json.loads(path.read_text("utf-8"))
        return data["questions"], [[tuple(p) for p in rel] for rel in data["relevance"]]
    questions, relevance = generate_questions(texts, ids, n, per_chunk=per_chunk, seed=seed, progress=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"questions": questions, "relevance": relevance}, ensure_ascii=False), "utf-8")
    tmp.replace(path)
    return questions, relevance


# ---------------------------------------------------------------------------------------------- embeddings
def embed_cached(texts: Sequence[str], embedder, verbose: bool = True) -> np.ndarray:
    """``embedder.embed(texts)``, read from / written to ``data/bench-cache/`` in blocks of 10,000 texts."""
    texts = list(texts)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", embedder.name).strip("-")
    out = []
    todo = sum(not _block_file(slug, texts[i:i + BLOCK]).exists() for i in range(0, len(texts), BLOCK))
    done = 0
    for i in range(0, len(texts), BLOCK):
        block = texts[i:i + BLOCK]
        path = _block_file(slug, block)
        if path.exists():
            vectors = np.load(path, allow_pickle=False)
        else:
            done += 1
            if verbose:
                print(f"embedding texts {i:,}-{i + len(block):,} (block {done} of {todo} to embed; cached in "
                      f"{CACHE}/) ...", flush=True)
            start = time.perf_counter()
            vectors = np.asarray(embedder.embed(block), dtype=np.float32)
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vectors, allow_pickle=False)
            tmp.replace(path)
            if verbose:
                print(f"  {len(block) / (time.perf_counter() - start):,.0f} texts/s", flush=True)
        out.append(vectors)
    return np.concatenate(out) if out else np.zeros((0, embedder.dimension), np.float32)


def _block_file(slug: str, block: Sequence[str]) -> Path:
    digest = hashlib.sha256(slug.encode())
    for t in block:
        digest.update(t.encode("utf-8") + b"\0")
    return CACHE / f"emb-{slug}-{digest.hexdigest()[:16]}.npy"


class Precomputed:
    """An embedder that looks texts up in a table of vectors made ahead of time (falls back to ``fallback``)."""

    def __init__(self, name: str, texts: Sequence[str], vectors: np.ndarray, fallback=None) -> None:
        self.name, self.fallback = name, fallback
        self.table = dict(zip(texts, vectors))
        self.dimension = int(vectors.shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:
            if self.fallback is None:
                raise KeyError(f"{len(missing)} texts were not embedded ahead of time")
            self.table.update(zip(missing, self.fallback.embed(missing)))
        return np.array([self.table[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dimension)


# ---------------------------------------------------------------------------------------------- timing
def median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned (or as ``align`` says)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]
    return "\n".join(lines)
