"""The store's behaviour on every backend: each test runs on hnswlib, Milvus Lite and a ``milvus-lite server`` (the
same client code a Milvus server or cluster gets), through the one ``VectorStore`` API the notebooks use."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
from helpers import REPO, TEXTS, HashEmbeddings, RotatedTask, build_rotated_store, fill_rotated

from dmhelpers import DeepMemoryError, Document, InputError, StoreError

TRAIN = list(range(0, 300, 2))
TEST = list(range(1, 300, 2))


def test_add_search_batch_search_and_ids(open_store):
    db = open_store(embedding=HashEmbeddings())
    ids = db.add_texts(TEXTS, metadatas=[{"n": i, "tags": ["a", i]} for i in range(6)])
    assert len(db) == 6 and db.ids == ids and db.texts == TEXTS and db.metadatas[2] == {"n": 2, "tags": ["a", 2]}
    hit = db.search("read a member of a zip archive", k=3)[0]
    assert hit.id == ids[0] and hit.text == TEXTS[0] and hit.metadata == {"n": 0, "tags": ["a", 0]}
    assert hit.score == pytest.approx(float(db.embedding.embed(["read a member of a zip archive"])[0] @
                                            db.embeddings[0]), abs=1e-5)  # cosine similarity, as hnswlib's
    batch = db.search(["parses a JSON document", "difference between two dates"], k=2)
    assert [b[0].text for b in batch] == [TEXTS[2], TEXTS[3]] and all(len(b) == 2 for b in batch)
    assert len(db.search("anything at all", k=50)) == 6  # k above the store's size returns everything
    assert db.add_texts([TEXTS[0]]) == [ids[0] + "-2"]  # the same text again gets a distinct id
    db.add_documents([Document("heapq.heappush pushes an item onto a heap.", {"n": 7})])
    assert len(db) == 8 and db.search("push an item onto a heap", k=1)[0].metadata == {"n": 7}
    assert np.allclose(np.linalg.norm(db.embeddings, axis=1), 1, atol=1e-5) and db.embeddings.shape == (8, 64)


def test_reopen_sees_exactly_what_was_written_and_refuses_another_embedder(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS, ids=[f"c{i}" for i in range(6)])
    fingerprint = db.fingerprint
    db.close()
    again = open_store(embedding=HashEmbeddings(), read_only=True)
    assert again.ids == [f"c{i}" for i in range(6)] and again.fingerprint == fingerprint
    with pytest.raises(StoreError, match="read_only=True"):
        again.add_texts(["more"])
    again.close()
    with pytest.raises(StoreError, match=r"built with the embedder 'test/hash-64', not 'other/model'.*embedding=None"):
        open_store(embedding=HashEmbeddings("other/model"))
    with pytest.raises(StoreError, match="holds 64-dimensional vectors but .* makes 32-dimensional"):
        open_store(embedding=HashEmbeddings(dimension=32))
    with pytest.raises(StoreError, match="No store"):
        open_store("never-built", read_only=True)


def test_bad_input_is_refused_before_anything_is_written(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS, ids=[f"c{i}" for i in range(6)])
    for texts, kwargs, match in [(["x"], {"ids": ["c0"]}, r"Duplicate ids \['c0'\]"),
                                 (["abc\ud800def"], {}, "lone surrogate"),
                                 (["a"], {"metadatas": [{"x": float("nan")}]}, "NaN and infinity"),
                                 ("one string", {}, "single string")]:
        with pytest.raises(InputError, match=match):
            db.add_texts(texts, **kwargs)
    with pytest.raises(InputError, match="k must be a whole number of chunks of at least 1"):
        db.search("zip", k=0)
    assert len(open_store(embedding=HashEmbeddings(), read_only=True)) == 6


def test_overwrite_replaces_only_on_the_first_write_and_a_stale_writer_is_refused(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    fresh = open_store(embedding=HashEmbeddings(), overwrite=True)
    assert len(fresh) == 0 and len(open_store(embedding=HashEmbeddings(), read_only=True)) == 6
    fresh.add_texts(["only this one"])
    assert open_store(embedding=HashEmbeddings(), read_only=True).texts == ["only this one"]
    with pytest.raises(StoreError, match="changed .*since it was opened"):
        db.add_texts(["written from a stale view"])
    assert open_store(embedding=HashEmbeddings(), read_only=True).texts == ["only this one"]


def test_db_folder_is_a_local_folder_of_this_store(open_store, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = open_store.backend == "milvus-server"
    default = {"folder": None} if server else {}  # a server store's default folder, under the user's cache
    db = open_store(embedding=HashEmbeddings(), **default)
    if server:
        url = urllib.parse.urlsplit(db.path)
        expected = tmp_path / "cache" / "dmhelpers" / "milvus" / f"{url.hostname}-{url.port}" / db.collection
    else:
        expected = {"hnswlib": tmp_path / "store", "milvus-lite": tmp_path / "store.db.files" / "chunks"}[
            open_store.backend]
    assert db.folder == expected
    assert open_store("other", embedding=HashEmbeddings(), **default).folder != db.folder


def test_deep_memory_on_every_backend(open_store):
    """Train, status, list, get/set, evaluate, search(deep_memory=True) and a retriever, as notebooks 02-05 do."""
    task = RotatedTask()
    db = fill_rotated(open_store(embedding=task), task)
    with pytest.raises(DeepMemoryError, match="needs a trained model"):
        db.search("q1-0", deep_memory=True)
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN[:60], [0, 1]), epochs=10, seed=0)
    assert db.deep_memory.status(job)["status"] == "completed" and db.deep_memory.get_model() == job
    assert [j["id"] for j in db.deep_memory.list_jobs()] == [job]
    db.deep_memory.set_model(job)
    report = db.deep_memory.evaluate(*RotatedTask.questions(TRAIN[:60], [5]), top_k=[1, 10])
    assert report["with model"]["recall@10"] > report["without model"]["recall@10"] + 0.2
    hits = db.search(["q0-5", "q2-5"], k=10, deep_memory=True)
    assert len(hits) == 2 and all(len(h) == 10 for h in hits)
    questions = RotatedTask.questions(TRAIN[:60], [5])[0]
    deep = [[h.id for h in row] for row in db.search(questions, k=20, deep_memory=True)]
    assert [[h.id for h in row] for row in db.search(questions, k=5, deep_memory=True)] == [d[:5] for d in deep]
    ids = db.ids  # search() and evaluate()'s ranking agree
    assert [[ids[r] for r in row] for row in db.deep_memory.rank(db.embed_queries(questions), 20)] == deep
    docs = db.as_retriever(k=3, deep_memory=True).invoke("q4-5")
    assert len(docs) == 3 and {"id", "score"} <= set(docs[0].metadata)
    db.close()
    reader = open_store(embedding=task, read_only=True)  # another reader finds the active model by itself
    assert reader.deep_memory.get_model() == job
    assert [h.id for h in reader.search("q0-5", k=10, deep_memory=True)] == [h.id for h in hits[0]]
    with pytest.raises(StoreError, match="read_only=True"):
        reader.deep_memory.set_model(job)
    reader.close()
    writer = open_store(embedding=task)
    writer.add_texts(["c0"], ids=["extra"])  # the corpus changed: the model is refused, as on hnswlib
    with pytest.raises(DeepMemoryError, match="cannot be used .*retrain"):
        writer.search("q0-5", deep_memory=True)
    with pytest.raises(StoreError, match="another version of this corpus"):
        writer.deep_memory.set_model(job)


def _rotated_report(db) -> dict:
    job = db.deep_memory.train(*RotatedTask.questions(TRAIN, [0, 1]), epochs=30, seed=0)
    assert db.deep_memory.get_model() == job
    return db.deep_memory.evaluate(*RotatedTask.questions(TEST[:100] + TRAIN[:100], [7]), top_k=[1, 3, 10, 50])


@pytest.fixture(scope="module")
def hnswlib_reference(tmp_path_factory):
    """The hnswlib store and its report, built once: the reference both Milvus backends are compared with."""
    db = build_rotated_store(tmp_path_factory.mktemp("reference"), RotatedTask())
    return db, _rotated_report(db)


@pytest.mark.parametrize("open_store", ["milvus-lite", "milvus-server"], indirect=True)  # hnswlib is the reference
def test_deep_memory_gives_the_same_recall_as_on_hnswlib(open_store, hnswlib_reference):
    """The same data and seed give the same model and recall on each backend, within index ties (HNSW graphs are
    built differently, so a near-tie can swap; a question in 200 moving one rank at one k is 0.5 points)."""
    reference, theirs = hnswlib_reference
    task = RotatedTask()
    db = fill_rotated(open_store(embedding=task), task)
    assert db.fingerprint == reference.fingerprint and np.array_equal(db.embeddings, reference.embeddings)
    ours = _rotated_report(db)
    for run in ("without model", "with model"):
        for key, value in theirs[run].items():
            assert ours[run][key] == pytest.approx(value, abs=0.011), (run, key)
    assert ours["with model"]["recall@10"] > ours["without model"]["recall@10"] + 0.2


OTHER_PROCESS = """
import json, sys
from helpers import HashEmbeddings
from dmhelpers import VectorStore
spec = json.loads(sys.argv[1])
db = VectorStore(spec["path"], embedding=HashEmbeddings(), read_only=True, **spec["kwargs"])
print(json.dumps({"n": len(db), "top": db.search("parses a JSON document", k=1)[0].id,
                  "model": db.deep_memory.get_model(), "folder": str(db.folder)}))
"""


def test_another_process_reopens_the_store_and_finds_its_model(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS, ids=[f"c{i}" for i in range(6)])
    questions = [t.split(" ", 1)[1] for t in TEXTS] * 2
    job = db.deep_memory.train(questions, [[(f"c{i % 6}", 1.0)] for i in range(12)], epochs=2)
    spec = {"path": str(db.path), "kwargs": {}}
    if open_store.backend == "milvus-server":
        spec["kwargs"] = {"collection": db.collection, "folder": str(db.folder)}
    db.close()  # Milvus Lite: one process per file
    out = subprocess.run([sys.executable, "-c", OTHER_PROCESS, json.dumps(spec)], capture_output=True, text=True,
                         check=True, cwd=REPO / "tests").stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"n": 6, "top": "c2", "model": job, "folder": str(db.folder)}
