"""Search speed and recall: the store's hnswlib index vs exact NumPy brute force, on real text embeddings.

    .venv/bin/python bench/bench_search.py [--sizes 10000 100000] [--ef 10 20 50 100 150 200 300] [--queries 1000]
                                           [--single 200] [--batch 100] [--reps 5] [--store data/store]
                                           [--M 16] [--ef-construction 200]

The corpus is the default store's chunks (notebook 01) followed by short passages of real technical prose
(docstring paragraphs of the standard library and of the packages in .venv; see ``bench/realtext.py``),
embedded with the store's model (all-MiniLM-L6-v2, 384 dimensions). The first run embeds about 100k
texts (a few minutes on 2 cores) and caches the vectors in ``data/bench-cache/``; later runs read them.
Random vectors would say little here: no graph index reaches high recall on them.

Queries are real texts that are not in the corpus: half held-out passages, half simulated questions about
the default store's chunks (notebook 02's offline question writer). For each corpus size the script builds
a ``VectorStore`` (hnswlib with the store's default ``M``, ``ef_construction``), reopens it as a user
would, and measures side by side in one process, alternating methods within each repetition:

- exact search: normalised dot products and ``np.argpartition`` (NumPy), timed with BLAS's default threads
  (every core) and with one thread (faster for single queries on a busy machine); the speed-ups are against
  the faster of the two,
- ``VectorStore.knn`` at each ``ef`` (the store's default marked ``*``),

as queries per second for single queries (the first ``--single`` queries, one call each) and for batches of
``--batch`` (all queries), medians over ``--reps`` repetitions, and recall@10 against the exact result.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import realtext
import threadpoolctl

from dmhelpers import VectorStore, set_random_seed

K = 10
TARGET_SPEEDUP, TARGET_RECALL = 20.0, 0.99


def exact_knn(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the ``k`` highest dot products per query, best first (vectors are normalised)."""
    scores = queries @ corpus.T
    part = np.argpartition(scores, -k, axis=1)[:, -k:]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def in_batches(fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, batch: int) -> np.ndarray:
    """``fn`` applied to ``queries`` ``batch`` rows at a time, the results stacked."""
    return np.concatenate([fn(queries[i:i + batch]) for i in range(0, len(queries), batch)])


def recall_at(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per query: the share of the exact top k that ``found`` holds."""
    return np.array([len(set(f) & set(e)) / len(e) for f, e in zip(found.tolist(), exact.tolist())])


def load_queries(store: str, n_corpus: int, n_queries: int) -> tuple[realtext.Corpus, np.ndarray, dict[str, slice]]:
    """The corpus, and ``n_queries`` query vectors: half held-out passages, then half simulated questions."""
    n_passages = n_queries - n_queries // 2
    data = realtext.load_corpus(store, n_corpus, n_passages)
    source = VectorStore(store, read_only=True)
    questions, _ = realtext.questions_cached(source.texts, source.ids, n_queries // 2, per_chunk=1, seed=0)
    queries = np.concatenate([data.query_vectors, realtext.embed_cached(questions, data.embedding)])
    return data, queries, {"passages": slice(0, n_passages), "questions": slice(n_passages, len(queries))}


def single_queries(queries: np.ndarray, kinds: dict[str, slice], n: int) -> np.ndarray:
    """The ``n`` queries timed one call each: the first of each kind, half and half."""
    return np.concatenate([queries[kinds["passages"]][:n // 2], queries[kinds["questions"]][:n - n // 2]])


def blas_threads() -> int:
    """BLAS's default thread count here."""
    return max((p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"), default=1)


Method = tuple[Callable[[np.ndarray], np.ndarray], "int | None"]  # search function, BLAS thread limit or None


def exact_methods(corpus: np.ndarray) -> dict[str, Method]:
    """Exact search with BLAS's default threads and, when that is more than one, with one; keyed by label."""
    fn = lambda q: exact_knn(corpus, q, K)  # noqa: E731
    threads = blas_threads()
    return {f"exact, {threads} BLAS threads": (fn, None)} | ({"exact, 1 BLAS thread": (fn, 1)} if threads > 1 else {})


def recalls(methods: dict[Any, Method], queries: np.ndarray, exact: np.ndarray, kinds: dict[str, slice],
            batch: int) -> dict[Any, dict[str, float]]:
    """Mean recall@10 against ``exact`` per method: over all queries and per kind of query."""
    out = {}
    for name, (fn, _) in methods.items():
        per_query = recall_at(in_batches(fn, queries, batch), exact)
        out[name] = {"all": per_query.mean()} | {k: per_query[s].mean() for k, s in kinds.items()}
    return out


def _limit(threads: int | None):
    return contextlib.nullcontext() if threads is None else threadpoolctl.threadpool_limits(threads, user_api="blas")


def time_methods(methods: dict[Any, Method], single: np.ndarray, reps: int, queries: np.ndarray | None = None,
                 batch: int = 100) -> dict[Any, dict[str, float]]:
    """Median seconds per query of each method over ``reps`` repetitions: ``"single"`` (``single``, one call
    each) and, when ``queries`` are given, ``"batched"`` (``queries`` in calls of ``batch``).

    Methods alternate within each repetition, so noise from the machine hits them all alike.
    """
    modes = ("single",) if queries is None else ("single", "batched")
    times: dict[Any, dict[str, list[float]]] = {name: {mode: [] for mode in modes} for name in methods}
    for fn, threads in methods.values():  # warm-up
        with _limit(threads):
            fn(single[:1])
            if queries is not None:
                fn(queries[:batch])
    for _ in range(reps):
        for name, (fn, threads) in methods.items():
            with _limit(threads):
                start = time.perf_counter()
                for i in range(len(single)):
                    fn(single[i:i + 1])
                times[name]["single"].append((time.perf_counter() - start) / len(single))
                if queries is not None:
                    start = time.perf_counter()
                    for i in range(0, len(queries), batch):
                        fn(queries[i:i + batch])
                    times[name]["batched"].append((time.perf_counter() - start) / len(queries))
    return {name: {mode: statistics.median(v) for mode, v in t.items()} for name, t in times.items()}


def baseline(med: dict[Any, dict[str, float]]) -> dict[str, float]:
    """Per mode, the faster exact search (BLAS threads help batches and can hurt single queries)."""
    exact = [t for name, t in med.items() if str(name).startswith("exact")]
    return {mode: min(t[mode] for t in exact) for mode in exact[0]}


def store_defaults() -> dict[str, int]:
    """``M``, ``ef_construction`` and ``ef`` as ``VectorStore`` sets them by default (read from its signature)."""
    params = inspect.signature(VectorStore.__init__).parameters
    return {name: params[name].default for name in ("M", "ef_construction", "ef")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store", help="the default store (notebook 01)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes")
    parser.add_argument("--ef", type=int, nargs="+", default=[10, 20, 50, 100, 150, 200, 300], help="hnswlib ef values")
    parser.add_argument("--queries", type=int, default=1000, help="queries (half passages, half questions)")
    parser.add_argument("--single", type=int, default=200, help="queries timed one call each")
    parser.add_argument("--batch", type=int, default=100, help="queries per call in batched timing")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (medians are shown)")
    parser.add_argument("--M", type=int, default=None, help="hnswlib M (default: VectorStore's)")
    parser.add_argument("--ef-construction", type=int, default=None,
                        help="hnswlib ef_construction (default: VectorStore's)")
    args = parser.parse_args()
    set_random_seed(0)
    defaults = store_defaults()
    graph = {"M": args.M or defaults["M"], "ef_construction": args.ef_construction or defaults["ef_construction"]}
    efs = sorted(set(args.ef) | {defaults["ef"]})

    data, queries, kinds = load_queries(args.store, max(args.sizes), args.queries)
    embedder, corpus_texts, corpus = data.embedding, data.texts, data.vectors
    n_passages = kinds["passages"].stop
    n_single = min(args.single, len(queries))
    print(f"queries: {len(queries):,} real texts not in the corpus ({n_passages:,} held-out passages, "
          f"{len(queries) - n_passages:,} simulated questions); single-query timing on {n_single:,} of them "
          f"(mixed evenly), batches of {args.batch}")
    print("exact search: NumPy float32 dot products + argpartition, timed with BLAS's default threads and with "
          "one; speed-ups are against the faster of the two")
    changed = " (not VectorStore's defaults: M={M}, ef_construction={ef_construction})".format(**defaults) \
        if graph != {k: defaults[k] for k in graph} else ""
    print(f"hnswlib through VectorStore: M={graph['M']}, ef_construction={graph['ef_construction']}{changed}, "
          f"default ef={defaults['ef']} (* below); medians of {args.reps} repetitions, k={K}\n")
    single = single_queries(queries, kinds, n_single)

    verdicts = []
    for n in args.sizes:
        X = np.ascontiguousarray(corpus[:n])
        texts = corpus_texts[:n]
        exact = in_batches(lambda q: exact_knn(X, q, K), queries, args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            fake = realtext.Precomputed(embedder.name, texts, X)
            db = VectorStore(f"{tmp}/s", embedding=fake, **graph)
            start = time.perf_counter()
            db.add_texts(texts)
            build = time.perf_counter() - start
            start = time.perf_counter()
            db = VectorStore(f"{tmp}/s", embedding=fake, read_only=True)
            opened = time.perf_counter() - start

            def hnsw(q: np.ndarray, ef: int) -> np.ndarray:
                db.ef = ef
                return db.knn(q, K)[0]

            methods = exact_methods(X) | {ef: ((lambda q, ef=ef: hnsw(q, ef)), None) for ef in efs}
            recall = recalls(methods, queries, exact, kinds, args.batch)
            med = time_methods(methods, single, args.reps, queries, args.batch)
        base = baseline(med)

        print(f"corpus {n:,} x {X.shape[1]}: VectorStore built in {build:.1f} s (add_texts: hnswlib graph, one "
              f"thread, plus the snapshot files), reopened in {opened:.2f} s")
        rows = []
        for name in methods:
            label = name if isinstance(name, str) else f"hnswlib ef={name}{'*' if name == defaults['ef'] else ''}"
            s, b = med[name]["single"], med[name]["batched"]
            rows.append([label, f"{recall[name]['all']:.4f}", f"{recall[name]['passages']:.4f}",
                         f"{recall[name]['questions']:.4f}", f"{s * 1e6:,.0f}", f"{1 / s:,.0f}",
                         f"{base['single'] / s:,.1f}x", f"{b * 1e6:,.1f}", f"{1 / b:,.0f}",
                         f"{base['batched'] / b:,.1f}x"])
        print(realtext.table(["method", "recall@10", "passages", "questions", "single us/q", "single q/s",
                              "speed-up", "batch us/q", "batch q/s", "speed-up"], rows))

        def meets(ef: int, mode: str) -> bool:
            return base[mode] / med[ef][mode] >= TARGET_SPEEDUP and recall[ef]["all"] >= TARGET_RECALL

        enough = [e for e in efs if recall[e]["all"] >= TARGET_RECALL]
        line = (f"  {n:,}: smallest ef with recall@10 >= {TARGET_RECALL}: " +
                (f"ef={enough[0]} ({base['single'] / med[enough[0]]['single']:.1f}x exact for single queries, "
                 f"{base['batched'] / med[enough[0]]['batched']:.1f}x for batches)" if enough else "none tried"))
        print(line)
        verdicts.append(line)
        if n >= 100_000:  # the target is set at 100k
            for mode in ("single", "batched"):
                ef = defaults["ef"]
                ok = meets(ef, mode)
                line = (f"  TARGET at {n:,}, {mode} queries (>= {TARGET_SPEEDUP:.0f}x exact and recall@10 >= "
                        f"{TARGET_RECALL} at the default ef={ef}): {'MET' if ok else 'MISSED'} "
                        f"({base[mode] / med[ef][mode]:.1f}x, recall {recall[ef]['all']:.4f})")
                if not ok:
                    passing = [e for e in efs if meets(e, mode)]
                    line += f"; met at ef={passing}" if passing else "; no ef tried meets it"
                print(line)
                verdicts.append(line)
        print()
    print("summary")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
