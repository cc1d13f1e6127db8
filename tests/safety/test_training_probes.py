"""Issue 20's probes of training, models, evaluation and question files: each was a fault found by using the public
API as a careless or hostile user would, and each test here failed before its fix.

- question files and the LLM question cache keep questions and chunk ids holding U+2028 and other characters that
  ``str.splitlines()`` splits at; they accept a byte-order mark and blank lines;
- a training run whose final model diverged (non-finite weights, NaN or zero vectors, worse than plain search on
  its own training questions) ends "failed" and never becomes the active model;
- a chunk listed twice in one relevance list counts once, with its highest score, in evaluate, train,
  save_questions and RAGAS context recall;
- a disk that fills up during training leaves no half-made job behind and the active model as it was.

Root ignores file permissions and a small tmpfs needs root, so a full disk is simulated by making the write call
raise ``OSError(ENOSPC)`` (the errors a real full disk gives were checked by hand on a 2 MB tmpfs).
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import replace

import numpy as np
import pytest
from helpers import HashEmbeddings, RotatedTask, build_rotated_store

import dmhelpers.deep_memory.jobs as jobs
import dmhelpers.deep_memory.repository as repository
from dmhelpers import DeepMemoryError, StoreError, VectorStore, context_recall, load_questions, save_questions
from dmhelpers.questions.cache import QuestionCache

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"]  # str.splitlines() splits at all
TRAIN = list(range(0, 120, 2))
TOPICS = ["zip archives", "csv rows", "json documents", "regular expressions", "file paths", "dates and times",
          "heaps and queues", "hash digests", "temporary folders", "command lines"]


@pytest.fixture()
def trained(tmp_path):
    """A rotated-task store with one completed, active model."""
    db = build_rotated_store(tmp_path / "store", RotatedTask())
    first = db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=2)
    assert db.deep_memory.get_model() == first
    return db, first


@pytest.fixture()
def worded(tmp_path):
    """A store of 40 worded chunks (HashEmbeddings: plain search finds most of them) and 20 questions."""
    db = VectorStore(tmp_path / "worded", embedding=HashEmbeddings())
    db.add_texts([f"Chunk {i} explains {TOPICS[i % 10]} in case {i}: open it, read it, close it {i}." for i in range(40)],
                 ids=[f"c{i}" for i in range(40)])
    return db, [f"How do I work with {TOPICS[i % 10]} in case {i}?" for i in range(20)], \
        [[(f"c{i}", 1.0)] for i in range(20)]


# ------------------------------------------------------------------------------------------ line separators
def test_question_files_keep_line_separators_in_questions_and_chunk_ids(tmp_path):
    questions = [f"How do I split{s}this?" for s in SEPARATORS]
    relevance = [[(f"c{s}1", 1.0), ("plain", 0.5)] for s in SEPARATORS]
    save_questions(tmp_path / "q.jsonl", questions, relevance)
    assert load_questions(tmp_path / "q.jsonl") == (questions, relevance)


def test_the_question_cache_keeps_entries_with_line_separators(tmp_path):
    cache = QuestionCache(tmp_path / "cache.jsonl", "model-a")
    for n, s in enumerate(SEPARATORS):
        cache.add(f"c{s}{n}", f"chunk text {n}", f"What does{s}chunk {n} say?")
    cache.close()
    again = QuestionCache(tmp_path / "cache.jsonl", "model-a")
    assert len(again.known) == len(SEPARATORS)
    for n, s in enumerate(SEPARATORS):
        assert again.get(f"c{s}{n}", f"chunk text {n}") == f"What does{s}chunk {n} say?"


def test_question_files_accept_a_byte_order_mark_and_blank_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    save_questions(path, ["How?", "Why?"], [[("a", 1.0)], [("b", 0.5)]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n", 1) + b"\n  \n")
    assert load_questions(path) == (["How?", "Why?"], [[("a", 1.0)], [("b", 0.5)]])


# ------------------------------------------------------------------------------------------ diverged training
def test_a_diverged_run_fails_and_the_active_model_stays(trained, monkeypatch):
    """The issue's run: learning_rate=1e30 (now refused up front; the bound is lifted here to reach the check)."""
    db, first = trained
    monkeypatch.setattr(jobs, "check_learning_rate", lambda lr: None, raising=False)
    with pytest.raises(DeepMemoryError, match=r"Training job .* failed: Training diverged: .*NaN, infinite or zero "
                                              r"vectors.*smaller learning_rate \(this job used 1e\+30") as info:
        db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=2, learning_rate=1e30)
    assert type(info.value).__name__ == "DivergedError"
    assert db.deep_memory.get_model() == first
    assert VectorStore(db.path, embedding=db.embedding).deep_memory.get_model() == first
    failed = db.deep_memory.list_jobs()[-1]
    assert failed["status"] == "failed" and "active model is unchanged" in failed["message"]
    assert not (db.path / "deep_memory" / failed["id"] / "adapter.safetensors").exists()


@pytest.mark.parametrize("spoil,match", [
    (lambda w: np.full_like(w, np.inf), r"the final model's weights are not all finite numbers"),
    (lambda w: np.random.default_rng(0).normal(size=w.shape).astype(np.float32) * 100,
     r"the final model ranks its own training questions worse than plain search"),
], ids=["inf-weights", "worse-than-plain-search"])
def test_a_final_model_that_is_not_what_was_validated_is_refused(worded, monkeypatch, spoil, match):
    db, questions, relevance = worded
    first = db.deep_memory.train(questions, relevance, epochs=2)
    real = jobs.train_adapter

    def spoilt(*args, **kwargs):
        result = real(*args, **kwargs)
        return replace(result, weights={k: spoil(v) for k, v in result.weights.items()}, alpha_out=1.0)

    monkeypatch.setattr(jobs, "train_adapter", spoilt)
    with pytest.raises(DeepMemoryError, match=match + r".*Train again with fewer epochs or another seed; the active "
                                               r"model is unchanged"):
        db.deep_memory.train(questions, relevance, epochs=2)
    assert db.deep_memory.get_model() == first and db.deep_memory.list_jobs()[-1]["status"] == "failed"


# ------------------------------------------------------------------------------------------ duplicates
def test_a_chunk_listed_twice_counts_once_everywhere(trained, tmp_path, monkeypatch):
    db, _ = trained
    questions, relevance = RotatedTask.questions(range(1, 41, 2), [0])
    doubled = [rel + [(rel[0][0], 0.5)] for rel in relevance]  # the same chunk again, with a lower score
    assert db.deep_memory.evaluate(questions, doubled) == db.deep_memory.evaluate(questions, relevance)

    q, rel = RotatedTask.questions(TRAIN, [0, 1])
    jobs_ = [db.deep_memory.train(q, r, epochs=5) for r in (rel, [x + [(x[0][0], 0.5)] for x in rel])]
    weights = [(db.path / "deep_memory" / j / "adapter.safetensors").read_bytes() for j in jobs_]
    assert weights[0] == weights[1]

    save_questions(tmp_path / "q.jsonl", ["How?"], [[("c1", 0.5), ("c2", 1.0), ("c1", 1.0)]])
    assert load_questions(tmp_path / "q.jsonl") == (["How?"], [[("c1", 1.0), ("c2", 1.0)]])

    seen = []
    monkeypatch.setattr("dmhelpers.evaluation.context_recall._offline_scores",
                        lambda samples: seen.extend(samples) or {"id_based_context_recall": 1.0})
    context_recall(db, ["q1-0"], [[("c1", 1.0), ("c1", 1.0)]], k=5)
    assert seen and all(s["reference_context_ids"] == ["c1"] for s in seen)


# ------------------------------------------------------------------------------------------ a full disk
def fail_writes(monkeypatch, when) -> None:
    """Make model writes whose path satisfies ``when`` fail as on a full disk."""
    real = repository.atomic_write_bytes

    def write(path, data):
        if when(str(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(repository, "atomic_write_bytes", write)


def test_a_disk_that_fills_while_training_keeps_the_active_model(trained, monkeypatch):
    db, first = trained
    before = [j["id"] for j in db.deep_memory.list_jobs()]
    fail_writes(monkeypatch, lambda path: path.endswith("adapter.safetensors"))
    with pytest.raises(StoreError, match=r"Training job .* failed: The disk is full: could not write "
                                         r".*adapter\.safetensors .*the active model is unchanged"):
        db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=2)
    failed = db.deep_memory.list_jobs()[-1]
    assert failed["id"] not in before and failed["status"] == "failed" and "disk is full" in failed["message"]
    assert db.deep_memory.get_model() == first


def test_a_disk_that_fills_after_the_first_record_leaves_no_job_behind(trained, monkeypatch):
    db, first = trained
    folders = sorted(p.name for p in (db.path / "deep_memory").iterdir())
    written = []
    fail_writes(monkeypatch, lambda path: (written.append(path), len(written) > 1)[1])  # all but the first
    with pytest.raises(StoreError, match=r"The disk is full: could not write .*adapter\.safetensors"):
        db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=2)
    assert written[0].endswith("job.json")
    assert sorted(p.name for p in (db.path / "deep_memory").iterdir()) == folders  # the job's folder is gone
    assert db.deep_memory.get_model() == first
    assert json.loads((db.path / "deep_memory" / "ACTIVE").read_text())["job_id"] == first


def test_a_memory_that_does_not_fit_the_store_is_not_used_and_says_why(tmp_path):
    """A model whose remembered chunk rows point past the store (a hand-edited or mixed-up adapter file) is kept on
    disk but never searched with: deep_memory=True names the damage and the fix."""
    from safetensors.numpy import load_file, save_file

    db = build_rotated_store(tmp_path / "store", RotatedTask())
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=2)
    assert db.deep_memory._read_job(job)["slots"], "the memory should act on repeat questions"
    path = db.path / "deep_memory" / job / "adapter.safetensors"
    weights = load_file(str(path))
    weights["memory.chunks"] = weights["memory.chunks"] + len(db)
    save_file(weights, str(path))
    again = VectorStore(db.path, embedding=db.embedding)
    with pytest.raises(DeepMemoryError, match="memory .*does not fit this store"):
        again.search("q0-3", deep_memory=True)
    assert [h.id for h in again.search("q0-3")] == [h.id for h in db.search("q0-3")]
