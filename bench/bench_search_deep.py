"""The cost of ``deep_memory=True`` on the tutorial's own store and model: ``search()`` with and without it.

    .venv/bin/python bench/bench_search_deep.py [--store data/store] [--reps 21] [--k 10]

Uses the store notebook 01 built and the model notebook 02 trained (run ``make run`` first) and its test questions,
on a scratch copy (nothing is written to the store). Times ``search()`` on single questions (one call each) and on a
batch of all of them, alternating plain and deep memory within each repetition, and prints medians per question:
the whole call (embedding the question included) and the part after embedding (``search_vectors`` vs the layer,
search and the memory's insertion), with the difference in percent.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from dmhelpers import VectorStore, load_questions


def median_seconds(calls: dict[str, callable], reps: int) -> dict[str, float]:
    """Median wall time of each call over ``reps`` rounds, the calls alternating within each round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store")
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    source = VectorStore(args.store, read_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = f"v{source.version:06d}"
        for part in (snapshot, "deep_memory", "questions"):
            shutil.copytree(Path(args.store) / part, Path(tmp) / part)
        shutil.copy(Path(args.store) / "STORE", Path(tmp) / "STORE")
        db = VectorStore(tmp, embedding=source.embedding, read_only=True)
        questions, _ = load_questions(Path(tmp) / "questions" / "test.jsonl")
        dm, k, n = db.deep_memory, args.k, len(questions)
        print(f"{len(db):,} chunks, {n} test questions, k={k}; Deep Memory model: {dm.summary()}")
        vectors = db.embed_queries(questions)
        singles = [vectors[i:i + 1] for i in range(n)]
        db.search(questions[0], k, deep_memory=True)  # warm-up

        def deep_search(v):  # what search(deep_memory=True) does after embedding
            moved = dm.transform(v)
            return dm.rerank(v, moved, db.search_vectors(moved, k), k)

        rows = []
        for label, calls in (
                ("search(), one question per call", {
                    "plain": lambda: [db.search(q, k) for q in questions],
                    "deep": lambda: [db.search(q, k, deep_memory=True) for q in questions]}),
                (f"search(), a batch of {n}", {
                    "plain": lambda: db.search(questions, k),
                    "deep": lambda: db.search(questions, k, deep_memory=True)}),
                ("after embedding, one question per call", {
                    "plain": lambda: [db.search_vectors(v, k) for v in singles],
                    "deep": lambda: [deep_search(v) for v in singles]}),
                (f"after embedding, a batch of {n}", {
                    "plain": lambda: db.search_vectors(vectors, k),
                    "deep": lambda: deep_search(vectors)})):
            t = median_seconds(calls, args.reps)
            rows.append((label, 1e6 * t["plain"] / n, 1e6 * t["deep"] / n, t["deep"] / t["plain"] - 1))
        print(f"\nper question, median of {args.reps} (us)")
        print(f"{'':<40} {'plain':>10} {'deep memory':>12} {'difference':>11}")
        for label, plain, deep, diff in rows:
            print(f"{label:<40} {plain:>10,.1f} {deep:>12,.1f} {diff:>+11.1%}")
        db.close()


if __name__ == "__main__":
    main()
