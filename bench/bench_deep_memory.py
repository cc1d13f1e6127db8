"""Deep Memory speed: training time and the extra cost of ``deep_memory=True`` on a 20k-chunk store.

    .venv/bin/python bench/bench_deep_memory.py [--store data/store] [--chunks 20000]

The corpus is the default store's real chunk vectors (notebook 01), padded to ``--chunks`` with vectors mixed
from pairs of real ones plus noise (embedding 20k more real chunks would take 15 minutes on 2 cores). The
questions are real simulated questions embedded with the store's model. Prints medians of several runs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time

import numpy as np

from dmhelpers import VectorStore, generate_questions, set_random_seed


class Precomputed:
    """An embedder that looks texts up in a table (chunk keys and questions embedded ahead of time)."""

    def __init__(self, name: str, table: dict[str, np.ndarray], fallback) -> None:
        self.name, self.table, self.fallback = name, table, fallback
        self.dimension = len(next(iter(table.values())))

    def embed(self, texts):
        return np.array([self.table[t] if t in self.table else self.fallback.embed([t])[0] for t in texts],
                        dtype=np.float32)


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--questions", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    set_random_seed(0)
    real = VectorStore(args.store, read_only=True)
    rng = np.random.default_rng(0)
    base = real.embeddings
    pairs = rng.integers(0, len(base), size=(args.chunks - len(base), 2))
    extra = base[pairs[:, 0]] + 0.5 * base[pairs[:, 1]] + 0.05 * rng.normal(size=(len(pairs), base.shape[1]))
    extra = (extra / np.linalg.norm(extra, axis=1, keepdims=True)).astype(np.float32)
    vectors = np.concatenate([base, extra])
    keys = [f"chunk-{i}" for i in range(len(vectors))]
    n_max = max(args.questions)
    questions, relevance = generate_questions(real.texts, real.ids, n_max, per_chunk=3, seed=0, progress=False)
    q_vectors = real.embedding.embed(questions)
    row = {cid: i for i, cid in enumerate(real.ids)}
    relevance = [[(keys[row[cid]], s) for cid, s in rel] for rel in relevance]
    table = dict(zip(keys, vectors)) | dict(zip(questions, q_vectors))
    with tempfile.TemporaryDirectory() as tmp:
        db = VectorStore(f"{tmp}/s", embedding=Precomputed(real.embedding.name, table, real.embedding))
        start = time.perf_counter()
        db.add_texts(keys, ids=keys)
        print(f"store: {len(db):,} chunks x {vectors.shape[1]} dims, built in {time.perf_counter() - start:.1f} s")

        print("\ntraining (blocking, default settings: 4-fold cross-validation x 30 epochs + final fit)")
        print(f"{'questions':>10} {'seconds':>8} {'alpha':>6} {'gate':>5} {'epochs':>6}")
        for n in args.questions:
            with contextlib.redirect_stdout(io.StringIO()):
                start = time.perf_counter()
                job = db.deep_memory.train(questions[:n], relevance[:n], seed=0)
                seconds = time.perf_counter() - start
                rec = db.deep_memory.status(job)
            print(f"{n:>10,} {seconds:>8.1f} {rec['alpha']:>6.1f} {str(rec['gate']):>5} {rec['epochs_chosen']:>6}")

        print("\nsearch cost, plain vs deep_memory=True (median of 7 runs; questions already embedded)")
        print(f"{'batch':>6} {'plain us/q':>11} {'deep us/q':>10} {'extra':>7}")
        for batch in (1, 100):
            qv = q_vectors[:batch]
            plain = median_time(lambda: [db.knn(qv, 10) for _ in range(200 // batch or 1)], 7)
            deep = median_time(lambda: [db.knn(db.deep_memory.transform(qv), 10) for _ in range(200 // batch or 1)], 7)
            per = 1e6 / (batch * (200 // batch or 1))
            print(f"{batch:>6} {plain * per:>11.1f} {deep * per:>10.1f} {deep / plain - 1:>7.1%}")
        embed = median_time(lambda: real.embedding.embed(questions[:1]), 7)
        print(f"\nfor scale: embedding one question with {real.embedding.name} takes {embed * 1e6:,.0f} us")


if __name__ == "__main__":
    main()
