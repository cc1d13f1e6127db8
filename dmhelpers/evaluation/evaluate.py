"""The tutorial's evaluation: Recall@k of plain search and of deep memory on test questions, printed in its format,
plus MRR@10, nDCG@10 and the breakdown by questions about chunks seen in training and about new chunks."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from dmhelpers.evaluation.metrics import TOP_K, retrieval_metrics
from dmhelpers.utils.errors import InputError, check_ks


class _Searchable(Protocol):
    def __len__(self) -> int: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def knn(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def evaluate(store: _Searchable, queries: Sequence[str], positives: list[list[int]], grades: list[list[float]],
             top_k: Sequence[int] = TOP_K, deep_rank: Callable[[np.ndarray, int], np.ndarray] | None = None,
             trained: set[int] | None = None) -> dict[str, Any]:
    """Recall@k (and MRR@10, nDCG@10) of plain search and, with ``deep_rank`` (deep memory: query vectors and k
    to ranked chunk rows), of the model.

    ``positives``/``grades`` are each question's relevant chunk rows and scores. Prints the tutorial's format.
    With ``trained`` (the chunk rows the model was trained on), also reports the two kinds of question
    separately: "seen chunks" (all of its relevant chunks were trained on) and "new chunks".
    """
    ks = check_ks("top_k", top_k, "Use e.g. top_k=[1, 3, 5, 10, 50, 100].")
    scored_ks = [k for k in ks if k <= len(store)]  # a store of n chunks has no recall@k for k > n
    if not scored_ks:
        raise InputError(f"top_k={list(ks)} asks only for recall at more chunks than the store's {len(store)}, which "
                         f"cannot be computed. Use values from 1 to {len(store)}, e.g. top_k=[1, 3, 5, 10].")
    if len(scored_ks) < len(ks):
        print(f"Recall@k for k = {', '.join(map(str, ks[len(scored_ks):]))} is not computed: the store holds only "
              f"{len(store)} chunks.")
    start = time.perf_counter()
    vectors = store.embed_queries(list(queries))
    print(f"Embedding queries took {time.perf_counter() - start:.2f} seconds")
    depth = min(max(max(scored_ks), 10), len(store))
    ranked = {"without model": store.knn(vectors, depth)[0]}
    if deep_rank is not None:
        ranked["with model"] = deep_rank(vectors, depth)
    else:
        print("No Deep Memory model is active: only plain search is evaluated. Train one with "
              "db.deep_memory.train(...).")
    report: dict[str, Any] = {}
    for name, rows in ranked.items():
        print(f"---- Evaluating {name} ----")
        report[name] = retrieval_metrics(rows, positives, scored_ks, grades)
        for k in scored_ks:
            print(f"Recall@{k}:\t{100 * report[name][f'recall@{k}']:5.1f}%")
    if "with model" in ranked and trained is not None:
        kinds = {"seen chunks": [i for i, p in enumerate(positives) if set(p) <= trained],
                 "new chunks": [i for i, p in enumerate(positives) if not set(p) <= trained]}
        report["by chunk"] = {
            kind: {"n": len(idx), **{name: retrieval_metrics([rows[i] for i in idx], [positives[i] for i in idx],
                                                             scored_ks, [grades[i] for i in idx])
                                     for name, rows in ranked.items()}}
            for kind, idx in kinds.items() if idx}
    return report
