"""Which test question to show first in notebook 04: one where deep memory's difference is plain to see.

    pick = pick_example(questions, relevance, plain_docs, deep_docs, texts, embedder)   # an index, or None
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_core.documents import Document

from dmhelpers.rag.answers import best_sentence

NEAR_COPY = 0.85  # a question this close to a sentence of its chunk copies it: it shows nothing about search


def pick_example(questions: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
                 plain_docs: Sequence[Sequence[Document]], deep_docs: Sequence[Sequence[Document]],
                 texts: Mapping[str, str], embedder, shown: int = 5) -> int | None:
    """The test question that shows deep memory best, or None when it finds no chunk plain search misses.

    Among the questions whose relevant chunk deep memory puts in its first ``shown`` results and plain search
    leaves out of all of its own, the one whose chunk holds the sentence closest to the question (a near-copy of
    a sentence does not count): a question that chunk plainly answers. Ties go to the earlier question.
    """
    best, best_score = None, -1.0
    for i, (question, rel, plain, deep) in enumerate(zip(questions, relevance, plain_docs, deep_docs)):
        wanted = {cid for cid, score in rel if score > 0}
        if any(d.metadata["id"] in wanted for d in plain) or not any(d.metadata["id"] in wanted for d in deep[:shown]):
            continue
        score = max(best_sentence(question, texts[cid], embedder)[1] for cid in wanted)
        if best_score < score < NEAR_COPY:
            best, best_score = i, score
    return best
