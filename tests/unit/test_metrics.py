"""Retrieval metrics against small cases computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dmhelpers.evaluation.metrics import exact_top_k, mrr_at_k, ndcg_at_k, recall_at_k, retrieval_metrics

RANKED = [["a", "b", "c", "d"], ["x", "y", "z", "w"], ["p", "q", "r", "s"]]
RELEVANT = [["b"], ["w", "x"], ["nope"]]


def test_recall_is_the_share_of_relevant_found_averaged_over_queries():
    got = recall_at_k(RANKED, RELEVANT, [1, 2, 4])
    assert got == pytest.approx({"recall@1": (0 + 0.5 + 0) / 3, "recall@2": (1 + 0.5 + 0) / 3,
                                 "recall@4": (1 + 1 + 0) / 3})


def test_mrr_uses_the_first_relevant_hit():
    assert mrr_at_k(RANKED, RELEVANT, 10) == pytest.approx((1 / 2 + 1 / 1 + 0) / 3)
    assert mrr_at_k(RANKED, RELEVANT, 1) == pytest.approx((0 + 1 + 0) / 3)


def test_ndcg_binary_and_graded():
    ideal2 = 1 + 1 / math.log2(3)
    expected = (1 / math.log2(3) / 1 + (1 + 1 / math.log2(5)) / ideal2 + 0) / 3
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(expected)
    graded = ndcg_at_k([["a", "b"]], [["a", "b"]], 10, grades=[[0.5, 1.0]])
    assert graded == pytest.approx((0.5 + 1 / math.log2(3)) / (1 + 0.5 / math.log2(3)))
    assert set(retrieval_metrics(RANKED, RELEVANT, [1])) == {"recall@1", "mrr@10", "ndcg@10"}


def test_exact_top_k_orders_by_similarity():
    corpus = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)
    assert exact_top_k(q, corpus, 3).tolist() == [[1, 2, 0]]
