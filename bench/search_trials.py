"""Ways to make hnswlib faster at recall@10 >= 0.99 than the graph's own knobs: trials, not the store's code.

    .venv/bin/python bench/search_trials.py [--size 100000] [--ef 40 60 80 100 120 150 200] [--queries 1000]
                                            [--single 200] [--reps 5] [--store data/store]

``bench_search.py`` shows that at 100k chunks the store's index reaches recall@10 0.99 only at about 17-20x exact
search for single queries, whatever ``M`` and ``ef_construction``. This script tries what else could move that
curve, each as a plain hnswlib index on the same corpus and queries as ``bench_search.py``, measured side by side
in one process against the same exact search:

- ``reference``: ``M=16``, ``ef_construction=200``, items added in corpus order, as ``VectorStore`` builds it;
- ``clustered order``: items added sorted by k-means cluster (256 clusters), so that neighbours in the graph
  tend to lie near each other in memory (hnswlib stores items in the order they were added);
- ``PCA 192 + re-rank``: the index holds the vectors projected on their first 192 principal components
  (half the bytes per distance); it returns ``ef // 2`` candidates, re-ranked with the full vectors;
- ``2 shards, 2 threads``: two indexes over alternate halves of the corpus, searched at once on the two
  cores (hnswlib releases the GIL) and merged.

Graphs are built with every core (faster to build; the graph is not bit-for-bit reproducible, which does not
matter here). The table shows recall@10 against exact search, microseconds per single query and the speed-up
over the faster exact search; then, per trial, the smallest ``ef`` reaching recall 0.99 and its speed-up; and
where in the exact top 10 the neighbours the reference misses at ``ef=100`` rank (near-ties at rank 10 would
mean recall@10 understates the index; misses spread over every rank mean the graph walk does not reach them).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import hnswlib
import numpy as np
import realtext
from bench_search import (TARGET_RECALL, K, baseline, exact_knn, exact_methods, in_batches, load_queries, recalls,
                          single_queries, time_methods)

from dmhelpers import set_random_seed

Search = Callable[[np.ndarray, int], np.ndarray]  # (queries, ef) -> row positions, best first


def build(vectors: np.ndarray, labels: np.ndarray, space: str = "cosine", M: int = 16,
          ef_construction: int = 200) -> hnswlib.Index:
    """An hnswlib index holding ``vectors`` under ``labels``, added in the order given, with every core."""
    index = hnswlib.Index(space=space, dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=M, ef_construction=ef_construction, random_seed=100)
    index.add_items(vectors, labels)
    index.set_num_threads(1)  # queries: one thread per call, as VectorStore's single queries
    return index


def plain(index: hnswlib.Index) -> Search:
    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.set_ef(ef)
        return index.knn_query(q, k=K)[0]
    return search


def cluster_order(vectors: np.ndarray, clusters: int = 256, rounds: int = 8) -> np.ndarray:
    """Row positions sorted by k-means cluster (spherical k-means, a few Lloyd rounds from a seeded sample)."""
    rng = np.random.default_rng(0)
    centres = vectors[rng.choice(len(vectors), clusters, replace=False)]
    for _ in range(rounds):
        assigned = np.concatenate([np.argmax(vectors[i:i + 10_000] @ centres.T, axis=1)
                                   for i in range(0, len(vectors), 10_000)])
        for c in range(clusters):
            members = vectors[assigned == c]
            if len(members):
                centres[c] = members.mean(0) / np.linalg.norm(members.mean(0))
    return np.argsort(assigned, kind="stable")


def pca_rerank(corpus: np.ndarray, dims: int = 192) -> tuple[Search, float]:
    """A search over a ``dims``-dimensional PCA projection, re-ranked exactly; and the variance it keeps."""
    mean = corpus.mean(0)
    _, s, vt = np.linalg.svd(corpus[::5] - mean, full_matrices=False)
    project = vt[:dims].T.astype(np.float32)
    index = build(np.ascontiguousarray((corpus - mean) @ project), np.arange(len(corpus)), space="ip")

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.set_ef(ef)
        candidates = index.knn_query((q - mean) @ project, k=max(K, ef // 2))[0]
        scores = np.einsum("qcd,qd->qc", corpus[candidates], q)
        return np.take_along_axis(candidates, np.argsort(-scores, axis=1)[:, :K], axis=1)
    return search, float((s[:dims] ** 2).sum() / (s ** 2).sum())


def shards(corpus: np.ndarray, pool: ThreadPoolExecutor) -> Search:
    """Two indexes over alternate rows, searched in parallel and merged by distance."""
    halves = [build(corpus[h::2], np.arange(h, len(corpus), 2)) for h in (0, 1)]

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        for index in halves:
            index.set_ef(ef)
        found = list(pool.map(lambda index: index.knn_query(q, k=K), halves))
        labels = np.concatenate([f[0] for f in found], axis=1)
        order = np.argsort(np.concatenate([f[1] for f in found], axis=1), axis=1)[:, :K]
        return np.take_along_axis(labels, order, axis=1)
    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store", help="the default store (notebook 01)")
    parser.add_argument("--size", type=int, default=100_000, help="corpus size")
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 60, 80, 100, 120, 150, 200])
    parser.add_argument("--queries", type=int, default=1000, help="queries (half passages, half questions)")
    parser.add_argument("--single", type=int, default=200, help="queries timed one call each")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (medians are shown)")
    args = parser.parse_args()
    set_random_seed(0)
    data, queries, kinds = load_queries(args.store, args.size, args.queries)
    corpus = np.ascontiguousarray(data.vectors[:args.size])
    exact = in_batches(lambda q: exact_knn(corpus, q, K), queries, 100)
    single = single_queries(queries, kinds, min(args.single, len(queries)))
    rows = np.arange(len(corpus))
    print(f"corpus {len(corpus):,} x {corpus.shape[1]} (as bench_search.py), {len(queries):,} queries, "
          f"single-query timing on {len(single)}, medians of {args.reps} repetitions, k={K}; building ...",
          flush=True)

    start = time.perf_counter()
    trials: dict[str, Search] = {"reference": plain(build(corpus, rows))}
    order = cluster_order(corpus)
    trials["clustered order"] = plain(build(corpus[order], order))
    trials["PCA 192 + re-rank"], kept = pca_rerank(corpus)
    pool = ThreadPoolExecutor(2)
    trials["2 shards, 2 threads"] = shards(corpus, pool)
    print(f"built in {time.perf_counter() - start:.0f} s; PCA 192 keeps {kept:.1%} of the variance\n")

    methods = exact_methods(corpus) | {(name, ef): ((lambda q, fn=fn, ef=ef: fn(q, ef)), None)
                                       for name, fn in trials.items() for ef in args.ef}
    recall = recalls(methods, queries, exact, kinds, batch=100)
    med = time_methods(methods, single, args.reps)  # single queries only: what these trials are about
    base = baseline(med)["single"]
    table = []
    for name in methods:
        label = name if isinstance(name, str) else f"{name[0]}, ef={name[1]}"
        s = med[name]["single"]
        table.append([label, f"{recall[name]['all']:.4f}", f"{recall[name]['passages']:.4f}",
                      f"{recall[name]['questions']:.4f}", f"{s * 1e6:,.0f}", f"{base / s:.1f}x"])
    print(realtext.table(["method", "recall@10", "passages", "questions", "single us/q", "speed-up"], table))
    print(f"\nsmallest ef with recall@10 >= {TARGET_RECALL}, single queries:")
    for name in trials:
        enough = [ef for ef in args.ef if recall[(name, ef)]["all"] >= TARGET_RECALL]
        print(f"  {name}: " + (f"ef={enough[0]}, {base / med[(name, enough[0])]['single']:.1f}x exact"
                                if enough else "none tried"))
    pool.shutdown()
    missed_ranks(trials["reference"], queries, exact, ef=100)


def missed_ranks(search: Search, queries: np.ndarray, exact: np.ndarray, ef: int) -> None:
    """Print where in the exact top k the neighbours that ``search`` misses at ``ef`` rank."""
    found = search(queries, ef)
    ranks = [r for f, e in zip(found.tolist(), exact.tolist()) for r, x in enumerate(e) if x not in set(f)]
    counts = np.bincount(ranks, minlength=K)
    print(f"\nreference at ef={ef}: {len(ranks)} of {exact.size:,} exact neighbours missed; by exact rank 1..{K}: "
          + " ".join(str(c) for c in counts))


if __name__ == "__main__":
    main()
