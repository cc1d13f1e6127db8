"""The memory's rank insertion: what it may do to a ranking, by construction, and how its thresholds are chosen."""
from __future__ import annotations

import numpy as np
import pytest

from dmhelpers.deep_memory.insertion import Evidence, calibrate, insert_rows, positions, rerank_hits
from dmhelpers.deep_memory.status import model_summary
from dmhelpers.store.records import Hit


def test_a_chunk_is_lifted_to_its_rank_and_every_other_result_moves_down_one_place_at_most():
    rng = np.random.default_rng(0)
    rows = np.array([rng.permutation(50)[:20] for _ in range(500)])
    chunk = rng.integers(0, 50, size=500)
    pos = rng.choice([0, 1, 3, 10, 30], size=500)  # 30: past the 20 results
    out = insert_rows(rows, chunk, pos)
    for before, after, c, p in zip(rows, out, chunk, pos):
        old = {r: i for i, r in enumerate(before)}
        new = {r: i for i, r in enumerate(after)}
        assert len(set(after)) == len(after) == len(before)
        if p == 0 or p > 10 or old.get(c, 99) <= p - 1:  # none, or plain search already ranks it there or better
            assert list(after) == list(before)
            continue
        assert after[p - 1] == c
        for r, i in old.items():
            if r != c and r in new:
                assert new[r] - i in (0, 1) and (new[r] == i) == (i < p - 1 or i > old.get(c, 99))


def test_the_most_confident_slot_wins():
    assert positions(np.array([0.95, 0.75, 0.65, 0.5]), [(1, 0.9), (3, 0.7), (10, 0.6)]).tolist() == [1, 3, 10, 0]


def test_hits_are_reranked_as_rows_are():
    memory = {"keys": np.eye(3, dtype=np.float32), "chunks": np.array([7, 8, 9]), "slots": [(1, 0.9)],
              "vectors": {r: np.ones(3, dtype=np.float32) / np.sqrt(3) for r in (7, 8, 9)},
              "hits": {r: Hit(f"c{r}", f"text {r}", 0.0, {"source": "s"}) for r in (7, 8, 9)}}
    q = np.eye(3, dtype=np.float32)[[0, 1]] * np.array([[1.0], [0.5]], dtype=np.float32)  # the second: no match
    hits = [[Hit(f"c{r}", "", 0.5, {}) for r in (1, 2, 3)] for _ in range(2)]
    out = rerank_hits(memory, q, q, hits, 3)
    assert [h.id for h in out[0]] == ["c7", "c1", "c2"] and out[0][0].text == "text 7"
    assert out[0][0].score == pytest.approx(1 / np.sqrt(3))
    assert out[1] == hits[1]


def evidence(rows, chunk, sim, positives):
    e = Evidence()
    e.add(np.array(rows), np.array(chunk), np.array(sim, dtype=np.float32), [[p] for p in positives],
          [[1.0]] * len(positives))
    e.done([1, 3, 10])
    return e


def test_a_threshold_that_costs_one_held_out_new_question_is_not_used():
    ranking = [list(range(10, 22))] * 4
    seen = evidence(ranking, [5, 5, 6, 6], [0.9, 0.8, 0.9, 0.75], [5, 5, 6, 6])  # remembered chunk is theirs
    new = evidence([list(range(30, 42))], [5], [0.78], [30])  # ranked first by plain search, taken for a repeat
    slots, report = calibrate({"seen": seen, "new": new}, floors=(0.7, 0.7, 0.6))
    # at rank 1, 0.775 and below would push the new question's chunk from rank 1; at rank 3 it costs nothing, and
    # the top 10 adds no gain once rank 3 is open
    assert slots == [(1, 0.8), (3, 0.7)]
    assert report["opened"] == {"seen": 4, "new": 1} and report["model"]["new"] == report["base"]["new"]
    assert report["model"]["seen"]["recall@1"] == 0.75 and report["base"]["seen"]["recall@1"] == 0.0


def test_no_threshold_opens_without_a_held_out_gain():
    ranking = [[5] + list(range(10, 21))] * 2
    seen = evidence(ranking, [5, 5], [0.9, 0.9], [5, 5])  # plain search already ranks them first
    slots, _ = calibrate({"seen": seen, "new": evidence([list(range(30, 42))], [5], [0.2], [30])})
    assert slots == []


def test_the_first_k_results_do_not_depend_on_k():
    rng = np.random.default_rng(1)
    rows = np.array([rng.permutation(200)[:100] for _ in range(300)])
    chunk, pos = rng.integers(0, 200, size=300), rng.choice([0, 1, 3, 10], size=300)
    full = insert_rows(rows, chunk, pos)
    for k in (1, 3, 5, 9, 10, 50):
        assert np.array_equal(insert_rows(rows[:, :k], chunk, pos), full[:, :k]), k


def test_a_model_whose_memory_and_layer_are_both_off_says_it_changes_nothing():
    idle = {"id": "job-1", "slots": [], "alpha": 0.0, "beta": 0.0, "alpha_out": 0.0}
    assert model_summary(idle) == ("job-1; memory: off; layer: off (neither acts: deep-memory search returns plain "
                                   "search's results)")
    acting = {**idle, "slots": [[1, 0.8]]}
    assert model_summary(acting) == "job-1; memory: nearest training question's chunk put at rank 1 above similarity " \
                                    "0.80; layer: off"
