"""hnswlib, Milvus Lite and a ``milvus-lite server`` side by side, through the one ``VectorStore`` API.

    .venv/bin/python bench/bench_milvus.py [--sizes 20000 100000] [--queries 1000] [--single 200] [--settle 30]
                                           [--questions 200] [--store data/store]

The corpus is the default store's chunks followed by real passages (``bench/realtext.py``; vectors cached in
``data/bench-cache/``), the queries held-out passages. Vectors are embedded ahead of time, so every figure is the
store's own cost, not the embedder's. For each size and backend the script

- inserts the corpus in one ``add_texts`` call (hnswlib builds its graph in this process; Milvus builds its HNSW
  index in the background, so searches wait ``--settle`` seconds after the insert before being timed),
- times single searches (``search_vectors`` of one query, k=10, the first ``--single`` queries, median) and one
  batch of all ``--queries`` queries (per query),
- measures recall@10 against exact search (NumPy), and
- trains Deep Memory on ``--questions`` simulated questions about the store's chunks (notebook 02's offline
  writer, cached), reports the training time (on Milvus it includes reading the corpus once from the server)
  and the extra time per query of ``deep_memory=True`` as trained (the adapter runs in this process, before the
  search; a model whose gate stays shut for a question costs almost nothing). A last line gives the adapter's
  cost when fully open.

Every backend uses the store's defaults: M=16, ef_construction=200, ef=100, cosine. The server is started on
127.0.0.1 with a free port and stopped by its PID; everything is written under a temporary folder.
"""
from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import realtext

from dmhelpers import VectorStore, set_random_seed
from dmhelpers.evaluation.metrics import exact_top_k

K = 10
BACKENDS = ("hnswlib", "milvus-lite", "lite-server")


def start_server(data: Path) -> tuple[subprocess.Popen, str]:
    """A ``milvus-lite server`` on 127.0.0.1 and a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).parent / "milvus-lite"
    proc = subprocess.Popen([str(cli), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("milvus-lite server did not start")


def open_store(backend: str, folder: Path, uri: str, name: str, embedder, **kwargs) -> VectorStore:
    if backend == "hnswlib":
        return VectorStore(folder / name, embedding=embedder, **kwargs)
    if backend == "milvus-lite":
        return VectorStore(folder / f"{name}.db", embedding=embedder, **kwargs)
    return VectorStore(uri, collection=name, embedding=embedder, folder=folder / f"{name}-files", **kwargs)


def measure(backend: str, corpus: realtext.Corpus, ids: list[str], embedder, questions, folder: Path, uri: str,
            args) -> dict[str, float]:
    name = f"s{len(ids)}"
    db = open_store(backend, folder, uri, name, embedder)
    start = time.perf_counter()
    db.add_texts(corpus.texts, ids=ids)
    insert = time.perf_counter() - start
    if backend != "hnswlib":
        time.sleep(args.settle)  # Milvus builds its HNSW index in the background; searches are brute force until then
    queries = corpus.query_vectors
    single = [realtext.median_time(lambda q=q: db.search_vectors(q[None], K), 1, 0) for q in queries[:args.single]]
    start = time.perf_counter()
    db.search_vectors(queries, K)
    batch = (time.perf_counter() - start) / len(queries)
    found = db.knn(queries, K)[0]
    exact = exact_top_k(queries, corpus.vectors, K)
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, exact)]))
    start = time.perf_counter()
    db.deep_memory.train(*questions, epochs=10, seed=0)
    train = time.perf_counter() - start
    qtexts = questions[0][:args.single]
    plain = statistics.median(realtext.median_time(lambda q=q: db.search(q, K), 1, 0) for q in qtexts)
    deep = statistics.median(realtext.median_time(lambda q=q: db.search(q, K, deep_memory=True), 1, 0) for q in qtexts)
    db.close()
    return {"insert": insert, "single": statistics.median(single), "batch": batch, "recall": recall,
            "train": train, "dm": deep - plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds for Milvus's background index build")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--store", default="data/store")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args()
    set_random_seed(0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the server
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        server, uri = start_server(Path(tmp) / "server") if "lite-server" in args.backends else (None, "")
        try:
            for size in args.sizes:
                corpus = realtext.load_corpus(args.store, size, args.queries)
                ids = [f"r{i}" for i in range(size)]
                embedder = realtext.Precomputed(corpus.embedding.name, corpus.texts, corpus.vectors, corpus.embedding)
                store_ids, store_texts = ids[:corpus.n_store], corpus.texts[:corpus.n_store]
                questions = realtext.questions_cached(store_texts, store_ids, args.questions, per_chunk=1)
                for backend in args.backends:
                    print(f"{backend} at {size:,} vectors ...", flush=True)
                    m = measure(backend, corpus, ids, embedder, questions, Path(tmp), uri, args)
                    rows.append([backend, f"{size:,}", f"{m['insert']:.1f}", f"{size / m['insert']:,.0f}",
                                 f"{1000 * m['single']:.2f}", f"{1000 * m['batch']:.2f}", f"{m['recall']:.3f}",
                                 f"{m['train']:.1f}", f"{1000 * m['dm']:+.2f}"])
                    print(realtext.table(HEADER, rows[-1:]), flush=True)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(30)
    print()
    print(realtext.table(HEADER, rows))
    print(f"\nThe adapter alone, fully open (alpha = beta = 1, no gate; {args.questions} memory rows), per query: "
          f"{1000 * adapter_cost(args.questions):.3f} ms single, the same on every backend (it runs in this process).")


def adapter_cost(n_memory: int, dim: int = 384) -> float:
    """Seconds per single query of the most expensive adapter path: layer plus memory over ``n_memory`` rows."""
    from dmhelpers.deep_memory.adapter import apply_adapter

    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    weights = {"net.weight": (0.01 * rng.normal(size=(dim, dim))).astype(np.float32)}
    refs, values, q = unit(rng.normal(size=(n_memory, dim))), unit(rng.normal(size=(n_memory, dim))), unit(
        rng.normal(size=(1, dim)))
    return realtext.median_time(lambda: apply_adapter(weights, q, 1.0, None, refs, 1.0, values), 2000)


HEADER = ["backend", "vectors", "insert s", "rows/s", "single ms", "batch ms/q", "recall@10", "DM train s",
          "DM ms/q"]

if __name__ == "__main__":
    main()
