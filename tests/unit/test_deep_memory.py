from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import HashEmbeddings, RotatedTask, build_rotated_store
from safetensors.numpy import load_file

from dmhelpers import DeepMemoryError, InputError, StoreError, VectorStore
from dmhelpers.evaluation.metrics import TOP_K

TRAIN = list(range(0, 300, 2))  # chunks asked about in training (150), two questions each
UNSEEN = list(range(1, 300, 2))[:100]  # chunks never asked about in training


def recall_at(db, questions, relevance, deep_memory, k):
    hits = db.search(questions, k=k, deep_memory=deep_memory)
    return float(np.mean([rel[0][0] in [h.id for h in hs] for hs, rel in zip(hits, relevance)]))


def test_adapter_learns_a_linear_map_and_helps_seen_and_unseen_chunks(rotated_store):
    db = rotated_store
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=15)
    assert db.deep_memory.get_model() == job
    for chunks in (TRAIN[:100], UNSEEN):
        q, rel = RotatedTask.questions(chunks, [7])
        base, model = recall_at(db, q, rel, False, 10), recall_at(db, q, rel, True, 10)
        assert base < 0.3 and model > base + 0.4, (base, model)
    record = db.deep_memory.status(job)
    assert record["status"] == "completed" and 0 < record["alpha"] <= 1 and not record["kept_identity"]
    assert [h["epoch"] for h in record["history"]] == list(range(0, 16))  # epoch 0: before training


class PairedTask(RotatedTask):
    """Questions about chunk i cluster around a random point unrelated to the chunk: no map can be learned,
    only *which chunk people mean* by questions like these, which is what the memory holds. In 128 dimensions, so
    questions about different chunks are as far apart as real ones (in 32, random directions come close)."""

    name, dimension = "test/paired-128", 128

    def embed(self, texts):
        out = []
        for t in texts:
            if t.startswith("q"):
                i, s = map(int, t[1:].split("-"))
                center = np.random.default_rng(10_000 + i).normal(size=self.dimension)
                extra = np.random.default_rng(s * 1000 + i).normal(size=self.dimension)
                out.append(center / np.linalg.norm(center) + 0.3 * extra / np.sqrt(self.dimension))
            else:
                out.append(self.corpus[int(t[1:])])
        out = np.array(out, dtype=np.float32).reshape(len(texts), self.dimension)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_memory_learns_which_chunks_people_ask_about_and_leaves_new_chunks_alone(tmp_path):
    db = build_rotated_store(tmp_path / "s", PairedTask())
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN[:100], [0, 1, 2]), epochs=3)
    record = db.deep_memory.status(job)
    assert record["slots"] and record["slots"][0][0] == 1, record["message"]
    seen_q, seen_rel = RotatedTask.questions(TRAIN[:100], [7])
    base, model = recall_at(db, seen_q, seen_rel, False, 1), recall_at(db, seen_q, seen_rel, True, 1)
    assert base < 0.05 and model > 0.9, (base, model)
    new_q, new_rel = RotatedTask.questions(UNSEEN, [7])
    for k in TOP_K:
        assert recall_at(db, new_q, new_rel, True, k) >= recall_at(db, new_q, new_rel, False, k), k
    weights = load_file(str(db.path / "deep_memory" / job / "adapter.safetensors"))
    assert weights["memory.keys"].shape == (300, 128) and weights["memory.chunks"].shape == (300,)
    assert set(weights["memory.chunks"].tolist()) == {int(db.ids.index(f"c{i}")) for i in TRAIN[:100]}


def test_training_is_deterministic_and_restored_on_reopen(rotated_store, tmp_path):
    db = rotated_store
    q, rel = RotatedTask.questions(TRAIN[:60], [0, 1])
    a = db.deep_memory.train(q, rel, epochs=5, seed=3)
    b = db.deep_memory.train(q, rel, epochs=5, seed=3)
    wa = load_file(str(db.path / "deep_memory" / a / "adapter.safetensors"))
    wb = load_file(str(db.path / "deep_memory" / b / "adapter.safetensors"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    again = VectorStore(db.path, embedding=db.embedding, read_only=True)
    assert again.deep_memory.get_model() == b
    test_q = RotatedTask.questions(TRAIN[:20], [9])[0]
    assert [[h.id for h in hs] for hs in again.search(test_q, k=5, deep_memory=True)] == \
           [[h.id for h in hs] for hs in db.search(test_q, k=5, deep_memory=True)]
    job = json.loads((db.path / "deep_memory" / b / "job.json").read_text())
    assert job["embedding"] == RotatedTask.name and job["dimension"] == 32 and job["fingerprint"] == db.fingerprint
    assert job["params"]["epochs"] == 5 and job["validation"]["base"] and "trained_chunks" in job
    assert not list(db.path.rglob("*.pt")) and not list(db.path.rglob("*.pkl"))


def test_identity_is_kept_when_nothing_beats_plain_search(tmp_path):
    task = RotatedTask(turn=0.0, noise=0.0)  # questions embed exactly onto their chunk: plain search is perfect
    db = build_rotated_store(tmp_path / "s", task)
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN[:50], [0, 1]), epochs=3)
    record = db.deep_memory.status(job)
    assert record["kept_identity"] and record["alpha"] == 0.0 and "Kept plain search" in record["message"]
    q = RotatedTask.questions(UNSEEN[:30], [5])[0]
    assert [h.id for h in db.search(q[0], k=10, deep_memory=True)] == [h.id for h in db.search(q[0], k=10)]


def test_a_prior_that_would_hurt_new_chunks_is_held_back(tmp_path):
    """Questions are noisy copies of their chunk (no map to learn): all a layer can learn is which chunks were
    asked about. The job must not end up worse than plain search on chunks it never saw, at any k."""
    task = RotatedTask(turn=0.0, noise=1.1)
    db = build_rotated_store(tmp_path / "s", task)
    db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1, 2]), epochs=20)
    q, rel = RotatedTask.questions(UNSEEN, [8, 9])
    for k in TOP_K:
        assert recall_at(db, q, rel, True, k) >= recall_at(db, q, rel, False, k) - 0.02, k


def test_background_training_reports_progress_and_cancel_keeps_the_active_model(rotated_store):
    db = rotated_store
    q, rel = RotatedTask.questions(TRAIN, [0, 1])
    first = db.deep_memory.train(q[:40], rel[:40], epochs=2)
    job = db.deep_memory.train(q, rel, epochs=2000, background=True)
    assert db.deep_memory.status(job)["status"] == "training"
    assert db.deep_memory.cancel(job) is True
    assert db.deep_memory.status(job)["status"] == "cancelled" and db.deep_memory.get_model() == first
    assert db.deep_memory.cancel(job) is False
    assert [j["id"] for j in db.deep_memory.list_jobs()] == [first, job]


def test_a_failed_job_never_replaces_the_active_model(rotated_store, monkeypatch):
    db = rotated_store
    q, rel = RotatedTask.questions(TRAIN[:40], [0, 1])
    first = db.deep_memory.train(q, rel, epochs=2)
    monkeypatch.setattr("dmhelpers.deep_memory.jobs.train_adapter", lambda *a, **k: 1 / 0)
    with pytest.raises(DeepMemoryError, match="failed: ZeroDivisionError"):
        db.deep_memory.train(q, rel, epochs=2)
    assert db.deep_memory.get_model() == first
    assert VectorStore(db.path, embedding=db.embedding).deep_memory.get_model() == first


@pytest.mark.parametrize("queries,relevance,match", [
    ([], [], "Got no queries"),
    (["q1-0"] * 12, [[("c1", 1.0)]] * 11, "12 queries but 11 relevance"),
    (["q1-0"] * 12, [[("nope", 1.0)]] * 12, "chunk id 'nope', which is not in this store"),
    (["q1-0"] * 12, [[("c1", 1.5)]] * 12, "outside \\[0, 1\\]"),
    (["q1-0"] * 12, [[]] * 12, "has no relevant chunks"),
    (["q1-0"] * 12, [["c1"]] * 12, "must be \\(chunk_id, score\\) pairs"),
    (["q1-0"] * 5, [[("c1", 1.0)]] * 5, "too few to hold out"),
    ("q1-0", [[("c1", 1.0)]], "not a single string"),
])
def test_bad_training_input(rotated_store, queries, relevance, match):
    with pytest.raises(InputError, match=match):
        rotated_store.deep_memory.train(queries, relevance)
    assert not (rotated_store.path / "deep_memory").exists()


def test_unknown_job_empty_store_and_read_only(rotated_store, tmp_path):
    with pytest.raises(InputError, match="Unknown job id 'job-x'"):
        rotated_store.deep_memory.status("job-x")
    empty = VectorStore(tmp_path / "empty", embedding=RotatedTask())
    with pytest.raises(StoreError, match="has no chunks"):
        empty.deep_memory.train(["q1-0"] * 12, [[("c1", 1.0)]] * 12)
    with pytest.raises(DeepMemoryError, match="needs a trained model"):
        rotated_store.search("q1-0", deep_memory=True)
    ro = VectorStore(rotated_store.path, embedding=rotated_store.embedding, read_only=True)
    with pytest.raises(StoreError, match="read_only=True"):
        ro.deep_memory.train(*RotatedTask.questions(TRAIN[:20], [0]))


def test_models_for_another_embedder_or_corpus_are_refused(rotated_store, tmp_path):
    db = rotated_store
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN[:40], [0, 1]), epochs=2)
    other = VectorStore(tmp_path / "other", embedding=HashEmbeddings(dimension=32))
    other.add_texts([f"text {i}" for i in range(20)])
    shutil.copytree(db.path / "deep_memory", other.path / "deep_memory")
    with pytest.raises(StoreError, match="trained for the embedder 'test/rotated-32'"):
        other.deep_memory.set_model(job)
    db.add_texts(["c5"], ids=["extra"])  # the corpus changes: the model no longer matches it
    with pytest.raises(DeepMemoryError, match="cannot be used .it does not match this store.s embedder or corpus"):
        db.search("q1-0", deep_memory=True)
    with pytest.raises(StoreError, match="another version of this corpus"):
        db.deep_memory.set_model(job)


def test_the_optional_mlp_trains_saves_and_searches(rotated_store):
    db = rotated_store
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=10, hidden=64)
    weights = load_file(str(db.path / "deep_memory" / job / "adapter.safetensors"))
    assert {"net.0.weight", "net.0.bias", "net.2.weight"} <= set(weights)
    q, rel = RotatedTask.questions(TRAIN[:100], [7])
    assert recall_at(db, q, rel, True, 10) > recall_at(db, q, rel, False, 10) + 0.2


def test_a_damaged_model_pointer_does_not_break_opening_the_store(rotated_store):
    db = rotated_store
    db.deep_memory.train(*RotatedTask.questions(TRAIN[:40], [0, 1]), epochs=2)
    (db.path / "deep_memory" / "ACTIVE").write_text("{broken")
    again = VectorStore(db.path, embedding=db.embedding)
    assert len(again) == len(db) and again.deep_memory.get_model() is None
    with pytest.raises(DeepMemoryError, match="files are damaged"):
        again.search("q1-0", deep_memory=True)


def test_evaluate_prints_the_tutorial_table_and_breaks_down_by_chunk(rotated_store, capsys):
    db = rotated_store
    q, rel = RotatedTask.questions(TRAIN[:30] + UNSEEN[:20], [7])
    only_plain = db.deep_memory.evaluate(q, rel, top_k=[1, 10])
    out = capsys.readouterr().out
    assert "No Deep Memory model is active" in out and set(only_plain) == {"without model"}
    db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=10)
    report = db.deep_memory.evaluate(q, rel)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Embedding queries took ") and out[0].endswith(" seconds")
    assert out[1] == "---- Evaluating without model ----" and out[8] == "---- Evaluating with model ----"
    assert out[2].startswith("Recall@1:\t") and out[2].endswith("%") and out[7].startswith("Recall@100:\t")
    assert set(report) == {"without model", "with model", "by chunk"}
    assert set(report["with model"]) == {f"recall@{k}" for k in TOP_K} | {"mrr@10", "ndcg@10"}
    assert all(0 <= v <= 1 for part in ("without model", "with model") for v in report[part].values())
    by = report["by chunk"]
    assert by["seen chunks"]["n"] == 30 and by["new chunks"]["n"] == 20
    assert by["seen chunks"]["with model"]["recall@10"] > by["seen chunks"]["without model"]["recall@10"]
