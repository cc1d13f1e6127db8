"""How varied repeat questions about one chunk are: each seen test question beside its nearest training question
about the same chunk.

A test question that nearly copies a training question about its chunk is found by the memory trivially, and the
gain it shows is inflated. Real users' repeat questions vary: on a real-question benchmark, a question's most
similar other question about the same document has cosine median 0.94 and 10th percentile 0.54
(:data:`REAL_SIBLINGS`). :func:`siblings` measures the same for a split.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

REAL_SIBLINGS = {"median": 0.94, "p10": 0.54}  # real repeat questions (all-MiniLM-L6-v2 cosine)


class Sibling(NamedTuple):
    """A seen test question, the training question about the same chunk most like it, and their cosine."""

    test: str
    train: str
    cosine: float


def siblings(embed: Callable[[list[str]], np.ndarray], train_questions: Sequence[str], train_relevance: Sequence,
             test_questions: Sequence[str], test_relevance: Sequence) -> list[Sibling]:
    """For each test question whose chunk has training questions, the most similar of them (unit vectors from
    ``embed``, e.g. ``db.embed_queries``), in test order."""
    by_chunk: dict[str, list[int]] = defaultdict(list)
    for j, rel in enumerate(train_relevance):
        for cid, _ in rel:
            by_chunk[cid].append(j)
    seen = [i for i, rel in enumerate(test_relevance) if any(cid in by_chunk for cid, _ in rel)]
    if not seen:
        return []
    train_vectors = embed(list(train_questions))
    test_vectors = embed([test_questions[i] for i in seen])
    out = []
    for vector, i in zip(test_vectors, seen):
        rows = sorted({j for cid, _ in test_relevance[i] for j in by_chunk.get(cid, ())})
        cosines = train_vectors[rows] @ vector
        best = int(np.argmax(cosines))
        out.append(Sibling(test_questions[i], train_questions[rows[best]], float(cosines[best])))
    return out


def sibling_summary(found: Sequence[Sibling]) -> dict[str, float]:
    """Median and 10th percentile of the cosines, rounded to two places (as printed), and how many."""
    cosines = np.array([s.cosine for s in found], dtype=float)
    if not len(cosines):
        return {"n": 0, "median": float("nan"), "p10": float("nan")}
    return {"n": len(cosines), "median": round(float(np.median(cosines)), 2),
            "p10": round(float(np.percentile(cosines, 10)), 2)}
