from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TEXTS, HashEmbeddings, folder_digest

from dmhelpers import Document, InputError, StoreError, VectorStore
from dmhelpers.store import HnswlibStore, MilvusStore
from dmhelpers.store.vector_store import backend_of
from dmhelpers.evaluation.metrics import exact_top_k


def test_add_search_and_batch_search(store):
    assert len(store) == 6 and store.texts == TEXTS and store.metadatas[2] == {"n": 2}
    hit = store.search("How do I read a file inside a zip archive?", k=3)[0]
    assert hit.text == TEXTS[0] and hit.metadata == {"n": 0} and 0 < hit.score <= 1
    batch = store.search(["parse json text", "difference between two dates"], k=2)
    assert [b[0].text for b in batch] == [TEXTS[2], TEXTS[3]] and all(len(b) == 2 for b in batch)
    assert len(store.search("anything", k=50)) == 6  # k larger than the store returns everything


def test_generated_ids_are_stable_content_hashes(tmp_path, embedder, store):
    other = VectorStore(tmp_path / "other", embedding=embedder)
    assert other.add_texts(TEXTS) == store.ids
    assert other.add_texts([TEXTS[0]]) == [store.ids[0] + "-2"]  # the same text again gets a distinct id


def test_appending_keeps_old_rows_and_index(store, embedder):
    store.add_documents([Document("heapq.heappush pushes an item onto a heap.", {"n": 6})])
    again = VectorStore(store.path, embedding=embedder)
    assert len(again) == 7 and again.search("push onto a priority queue", k=1)[0].metadata == {"n": 6}
    assert again.search("parse json text", k=1)[0].text == TEXTS[2]
    assert sorted(p.name for p in store.path.iterdir()) == [".lock", "STORE", "v000002"]  # old snapshot removed


def test_hnsw_agrees_with_exact_search(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    data = (centers[rng.integers(0, 20, 500)] + 0.3 * rng.normal(size=(500, 32))).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)

    class Fixed(HashEmbeddings):
        def embed(self, texts):
            return data[[int(t) for t in texts]]

    db = VectorStore(tmp_path / "s", embedding=Fixed("test/fixed", 32))
    db.add_texts([str(i) for i in range(500)])
    queries = data[:50] + 0.1 * rng.normal(size=(50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    labels, scores = db.knn(queries, k=10)
    exact = exact_top_k(queries, data, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, exact)])
    assert recall >= 0.99
    np.testing.assert_allclose(scores[:, 0], (queries @ data[labels[:, 0]].T).diagonal(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- bad input: clear errors, nothing lost
@pytest.mark.parametrize("texts,kwargs,match", [
    ([], {}, "got no texts"),
    ("one string", {}, "single string"),
    (["ok", "  "], {}, "Text 1 is empty"),
    (["a", "b"], {"ids": ["x"]}, "2 texts but 1 ids"),
    (["a", "b"], {"ids": ["x", "x"]}, "Duplicate ids \\['x'\\]"),
    (["a"], {"metadatas": [{}, {}]}, "1 texts but 2 metadatas"),
    (["a"], {"metadatas": [{"f": object()}]}, "Metadata 0 cannot be stored as JSON"),
])
def test_bad_add_is_refused_and_store_unchanged(store, texts, kwargs, match):
    before = folder_digest(store.path)
    with pytest.raises(InputError, match=match):
        store.add_texts(texts, **kwargs)
    assert folder_digest(store.path) == before and len(store) == 6


def test_duplicate_of_an_existing_id_is_refused(store):
    before = folder_digest(store.path)
    with pytest.raises(InputError, match="Duplicate ids"):
        store.add_texts(["new text"], ids=[store.ids[0]])
    assert folder_digest(store.path) == before


@pytest.mark.parametrize("damage", ["delete-records", "corrupt-embeddings", "delete-index", "corrupt-pointer",
                                    "truncate-records"])
def test_damaged_store_is_a_clear_error_and_left_as_is(store, embedder, damage):
    snap = store.path / "v000001"
    if damage == "delete-records":
        (snap / "records.jsonl").unlink()
    elif damage == "corrupt-embeddings":
        (snap / "embeddings.npy").write_bytes(b"garbage")
    elif damage == "delete-index":
        (snap / "index.bin").unlink()
    elif damage == "corrupt-pointer":
        (store.path / "STORE").write_text("{not json")
    else:
        lines = (snap / "records.jsonl").read_text().splitlines()
        (snap / "records.jsonl").write_text("\n".join(lines[:3]) + "\n")
    before = folder_digest(store.path)
    with pytest.raises(StoreError, match="(damaged|unreadable).*Rebuild it"):
        VectorStore(store.path, embedding=embedder)
    assert folder_digest(store.path) == before


def test_embedder_mismatch_is_refused(store):
    with pytest.raises(StoreError, match="built with the embedder 'sentence-transformers/all-MiniLM-L6-v2'"):
        VectorStore(store.path, embedding=HashEmbeddings())
    with pytest.raises(StoreError, match="384-dimensional.*64-dimensional"):
        VectorStore(store.path, embedding=HashEmbeddings(name="sentence-transformers/all-MiniLM-L6-v2"))


def test_read_only_never_writes(store):
    before = folder_digest(store.path)
    db = VectorStore(store.path, read_only=True)
    with pytest.raises(StoreError, match="read_only=True"):
        db.add_texts(["more"])
    assert folder_digest(store.path) == before


def test_missing_store_and_foreign_folder(tmp_path):
    with pytest.raises(StoreError, match="No store at .*Build one first"):
        VectorStore(tmp_path / "nothing", read_only=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(StoreError, match="holds other files but no store"):
        VectorStore(tmp_path / "mine", embedding=HashEmbeddings())
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_overwrite_replaces_only_on_the_first_write(store, embedder):
    fresh = VectorStore(store.path, embedding=embedder, overwrite=True)
    assert len(fresh) == 0
    assert len(VectorStore(store.path, read_only=True)) == 6  # a failed rebuild would still have the old store
    fresh.add_texts(["only this one"])
    assert VectorStore(store.path, read_only=True).texts == ["only this one"]


def test_writer_with_a_stale_view_is_refused(store, embedder):
    stale = VectorStore(store.path, embedding=embedder)
    store.add_texts(["written by the first writer"])
    with pytest.raises(StoreError, match="changed on disk since it was opened"):
        stale.add_texts(["written by the second"])
    assert len(VectorStore(store.path, read_only=True)) == 7


def test_search_errors(tmp_path, store):
    with pytest.raises(InputError, match="non-empty question"):
        store.search("")
    with pytest.raises(InputError, match="k must be a whole number of chunks of at least 1"):
        store.search("zip", k=0)
    empty = VectorStore(tmp_path / "empty", embedding=HashEmbeddings())
    with pytest.raises(StoreError, match="is empty"):
        empty.search("zip")


def test_meta_records_embedder_and_fingerprint(store):
    meta = json.loads((store.path / "v000001" / "meta.json").read_text())
    assert meta["embedding"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["dimension"] == 384
    assert meta["count"] == 6 and meta["fingerprint"] == store.fingerprint


def test_the_backend_is_chosen_by_the_path(store, tmp_path):
    assert backend_of(tmp_path / "folder") == backend_of("../data/store") == "hnswlib"
    assert backend_of(tmp_path / "x.db") == backend_of("x.db") == "milvus"
    assert backend_of("http://127.0.0.1:19530") == backend_of("https://milvus.example:443") == "milvus"
    hnsw_named_db = VectorStore(tmp_path / "old.db", embedding=HashEmbeddings(), overwrite=False)
    assert type(hnsw_named_db) is MilvusStore  # a new .db path is Milvus Lite ...
    hnsw_named_db.close()
    (tmp_path / "kept.db").mkdir()
    (tmp_path / "kept.db" / "STORE").write_text("{}")
    assert backend_of(tmp_path / "kept.db") == "hnswlib"  # ... but an hnswlib store folder named *.db stays one
    assert type(store) is HnswlibStore and isinstance(store, VectorStore)


def test_the_side_folder_of_a_milvus_store(tmp_path, monkeypatch):
    from dmhelpers.store.milvus_connection import side_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert side_folder("http://milvus.internal:19530", "docs") == tmp_path / "cache/dmhelpers/milvus/milvus.internal-19530/docs"
    assert side_folder("https://in01.cloud.example", "docs") == tmp_path / "cache/dmhelpers/milvus/in01.cloud.example-443/docs"
    assert side_folder(str(tmp_path / "x.db"), "chunks") == tmp_path / "x.db.files" / "chunks"
