"""What better recall is worth: recall@k and prompt tokens per question at each k, and the tokens and dollars
saved when deep memory reaches plain search's recall with fewer chunks in the prompt."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tiktoken

from dmhelpers.evaluation.metrics import recall_at_k
from dmhelpers.questions.qrels import check_question_lists, relevance_pairs
from dmhelpers.rag.answers import build_messages
from dmhelpers.rag.retriever import as_document
from dmhelpers.rag.tokens import count_tokens
from dmhelpers.utils.errors import InputError

if TYPE_CHECKING:
    from dmhelpers.store import VectorStore


def prompt_tokens(messages: list[dict[str, str]], encoding: tiktoken.Encoding) -> int:
    """Tokens of the messages' contents (the few tokens a chat API adds per message are not counted)."""
    return sum(count_tokens([m["content"] for m in messages], encoding))


def cost_curve(db: VectorStore, questions: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
               ks: Sequence[int], deep_memory: bool, encoding: tiktoken.Encoding) -> dict[str, list[float]]:
    """Recall@k and mean prompt tokens per question at each k, from one search of the real chunks.

    The prompt at k is what :func:`dmhelpers.retrieval.answer` would send with the top k chunks.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > len(db):
        raise InputError(f"ks must be whole numbers from 1 to the store's {len(db)} chunks, got {list(ks)}.")
    check_question_lists(questions, relevance, "cost_curve")
    hits = db.search(list(questions), k=ks[-1], deep_memory=deep_memory)
    ranked = [[h.id for h in hs] for hs in hits]
    relevant = [[cid for cid, s in relevance_pairs(n, rel) if s > 0] for n, rel in enumerate(relevance)]
    recall = recall_at_k(ranked, relevant, ks)
    documents = [[as_document(h) for h in hs] for hs in hits]
    tokens = [[prompt_tokens(build_messages(q, docs[:k]), encoding) for k in ks] for q, docs in zip(questions, documents)]
    return {"k": ks, "recall": [recall[f"recall@{k}"] for k in ks],
            "prompt_tokens": np.mean(np.array(tokens, dtype=float), axis=0).tolist()}


def smallest_k(curve: dict[str, list[float]], target: float) -> int | None:
    """The smallest k at which ``curve`` reaches recall ``target`` (None if it never does)."""
    return next((k for k, r in zip(curve["k"], curve["recall"]) if r >= target - 1e-12), None)


def savings(plain: dict[str, list[float]], deep: dict[str, list[float]], baseline_k: int,
            price_per_mtok: float) -> dict[str, Any]:
    """Tokens and dollars per 1,000 questions saved by deep memory at the recall plain search has at ``baseline_k``.

    Both sides get their smallest k reaching that recall (``k_plain <= baseline_k``, ``k_deep``), so the saving is
    deep memory's, not a too-generous baseline's: a model that ranks like plain search saves nothing. No k reaching
    it means no saving (``k_deep`` is None).
    """
    if baseline_k not in plain["k"]:
        raise InputError(f"BASELINE_K={baseline_k} is not among the measured k {plain['k']}; add it to the k values.")
    if price_per_mtok < 0:
        raise InputError(f"PRICE_PER_MTOK must be a price per million input tokens (>= 0), got {price_per_mtok}.")
    target = plain["recall"][plain["k"].index(baseline_k)]
    k_plain, k_deep = smallest_k(plain, target), smallest_k(deep, target)
    base_tokens = plain["prompt_tokens"][plain["k"].index(k_plain)]
    deep_tokens = deep["prompt_tokens"][deep["k"].index(k_deep)] if k_deep is not None else base_tokens
    saved = max(0.0, 1000 * (base_tokens - deep_tokens)) if k_deep is not None else 0.0
    return {"baseline_k": baseline_k, "target_recall": target, "k_plain": k_plain, "k_deep": k_deep,
            "recall_deep": deep["recall"][deep["k"].index(k_deep)] if k_deep is not None else None,
            "tokens_per_question_plain": base_tokens, "tokens_per_question_deep": deep_tokens,
            "tokens_saved_per_1000": saved, "dollars_saved_per_1000": saved / 1e6 * price_per_mtok}
