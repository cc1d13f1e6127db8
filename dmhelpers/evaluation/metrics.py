"""Retrieval metrics over ranked results: Recall@k (the tutorial's), MRR@k and nDCG@k."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOP_K: tuple[int, ...] = (1, 3, 5, 10, 50, 100)


def exact_top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    """Row positions of the ``k`` most similar corpus rows to each query (exact, by dot product), best first."""
    k = min(k, len(corpus))
    scores = queries @ corpus.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(ranked: Sequence[Sequence], relevant: Sequence[Sequence], ks: Sequence[int] = TOP_K) -> dict[str, float]:
    """Share of each query's relevant items found in its top ``k``, averaged over queries, for each ``k`` (an item
    listed twice in ``relevant`` counts once)."""
    out = {}
    for k in ks:
        shares = [len(set(r[:k]) & set(rel)) / len(set(rel)) for r, rel in zip(ranked, relevant)]  # each item once
        out[f"recall@{k}"] = float(np.mean(shares)) if shares else 0.0
    return out


def mrr_at_k(ranked: Sequence[Sequence], relevant: Sequence[Sequence], k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant item within the top ``k`` (0 when none is found)."""
    scores = []
    for r, rel in zip(ranked, relevant):
        wanted = set(rel)
        hit = next((i for i, item in enumerate(r[:k]) if item in wanted), None)
        scores.append(0.0 if hit is None else 1.0 / (hit + 1))
    return float(np.mean(scores)) if scores else 0.0


def ndcg_at_k(ranked: Sequence[Sequence], relevant: Sequence[Sequence], k: int = 10,
              grades: Sequence[Sequence[float]] | None = None) -> float:
    """Normalised discounted cumulative gain at ``k`` (graded when ``grades`` are given, else binary)."""
    scores = []
    for n, (r, rel) in enumerate(zip(ranked, relevant)):
        gain: dict = {}
        for item, g in zip(rel, grades[n] if grades is not None else [1.0] * len(rel)):
            gain[item] = max(g, gain.get(item, g))  # an item listed twice counts once, with its highest grade
        dcg = sum(gain.get(item, 0.0) / np.log2(i + 2) for i, item in enumerate(r[:k]))
        ideal = sum(g / np.log2(i + 2) for i, g in enumerate(sorted(gain.values(), reverse=True)[:k]))
        scores.append(dcg / ideal if ideal > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def retrieval_metrics(ranked: Sequence[Sequence], relevant: Sequence[Sequence], ks: Sequence[int] = TOP_K,
                      grades: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
    """Recall@k for each ``k`` plus MRR@10 and nDCG@10: the numbers notebook 03 prints."""
    return {**recall_at_k(ranked, relevant, ks), "mrr@10": mrr_at_k(ranked, relevant, 10),
            "ndcg@10": ndcg_at_k(ranked, relevant, 10, grades)}
