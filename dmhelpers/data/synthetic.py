"""Synthetic question sets of a given shape, for benchmarks and tests that need sizes no bundled corpus has.

``many_positives()`` has the shape of a medical retrieval benchmark of real queries (about 3,600 documents and
2,600 training queries with about 42 graded relevant documents each): chunks cluster into topics, a question is
a noisy blend of its relevant chunks in a "question style" (a fixed partial rotation, which a linear layer
can learn to undo), and relevance is graded (1.0 for chunks of the question's own topic, 0.5
for those of a neighbouring one). :class:`TableEmbeddings` embeds the set's texts by table lookup, so a real
:class:`~dmhelpers.VectorStore` can hold it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dmhelpers.utils.errors import EmbeddingError


class TableEmbeddings:
    """An embedder that looks texts up in a table of precomputed vectors (unknown texts are an error)."""

    def __init__(self, name: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.name = name
        self.table = dict(zip(texts, np.asarray(vectors, dtype=np.float32)))
        self._dimension = int(np.asarray(vectors).shape[1])

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self._dimension), np.float32)
        except KeyError as exc:
            raise EmbeddingError(f"{self.name} has no vector for the text {exc.args[0]!r}: it only embeds the texts "
                                 "it was built with.") from None


@dataclass
class SyntheticSet:
    """Chunks and questions with their vectors, and the tutorial's ``relevance`` lists (chunk ids and grades)."""

    chunk_ids: list[str]
    chunk_vectors: np.ndarray
    questions: list[str]
    question_vectors: np.ndarray
    relevance: list[list[tuple[str, float]]]

    def embedder(self) -> TableEmbeddings:
        n = len(self.chunk_ids)
        return TableEmbeddings(f"synthetic/{n}x{self.chunk_vectors.shape[1]}", self.chunk_ids + self.questions,
                               np.concatenate([self.chunk_vectors, self.question_vectors]))

    @property
    def pairs(self) -> int:
        return sum(len(r) for r in self.relevance)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def many_positives(n_chunks: int = 3600, n_questions: int = 2600, per_question: int = 42, dim: int = 384,
                   topics: int = 80, style: float = 0.5, seed: int = 0) -> SyntheticSet:
    """Questions with about ``per_question`` graded relevant chunks each, over ``n_chunks`` topical chunks;
    ``style`` is how far questions are turned away from their chunks (0: not at all)."""
    rng = np.random.default_rng(seed)
    turn = (1 - style) * np.eye(dim) + style * np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    centers = _unit(rng.normal(size=(topics, dim)))
    topic = rng.integers(0, topics, n_chunks)
    chunks = _unit(centers[topic] + 0.9 * _unit(rng.normal(size=(n_chunks, dim))))
    members = [np.flatnonzero(topic == t) for t in range(topics)]
    neighbour = np.argsort(-(centers @ centers.T), axis=1)[:, 1]
    questions, vectors, relevance = [], [], []
    for i in range(n_questions):
        t = int(rng.integers(0, topics))
        own = rng.permutation(members[t])[:max(1, (2 * per_question) // 3)]
        near = rng.permutation(members[neighbour[t]])[:per_question - len(own)]
        rows = np.concatenate([own, near])
        grades = np.concatenate([np.ones(len(own)), np.full(len(near), 0.5)])
        questions.append(f"q{i}")
        blend = _unit(np.average(chunks[rows], axis=0, weights=grades))
        vectors.append(_unit(turn @ blend + 0.3 * _unit(rng.normal(size=dim))))
        relevance.append([(f"c{r}", float(g)) for r, g in zip(rows, grades)])
    return SyntheticSet([f"c{i}" for i in range(n_chunks)], chunks, questions, np.stack(vectors), relevance)
