"""Probes of a Milvus store through the public API (issue 20): a store used after ``close()``, ids that a Milvus
filter string cannot hold as typed, damaged Milvus Lite files, a damaged record, and a URI with a password. Each is
a clear error that names the problem and the fix (the ids simply work, as on hnswlib), and nothing the user built
is lost or half-written."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import HashEmbeddings, free_port
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from dmhelpers import InputError, StoreError, VectorStore

TEXTS = [f"chunk {i} about {topic}, with a worked example and the errors it raises, case {i}"
         for i, topic in enumerate(["zip archives", "csv rows", "json documents", "regular expressions", "file paths",
                                    "dates and times", "heaps and queues", "hash digests", "temporary folders",
                                    "command lines", "sockets", "threads"])]
ODD_IDS = ["line\nbreak", "carriage\rreturn", 'double"quote', "back\\slash", "tab\there", "nul\x00byte",
           "ls\u2028sep", "nel\x85x", "it's", "100%_like", "\\n typed", "é😀"]
CLOSED = r"The store .* is closed \(db\.close\(\) let go of it\)\. Open it again with VectorStore\("


@pytest.mark.parametrize("open_store", ["milvus-lite", "milvus-server"], indirect=True)
def test_every_call_on_a_closed_store_says_it_is_closed(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS[:4])
    assert len(db.ids) == 4  # read once: a column kept in memory is no way round it either
    db.close()
    calls = {"search": lambda: db.search("zip archives"), "add_texts": lambda: db.add_texts(["more"]),
             "ids": lambda: db.ids, "texts": lambda: db.texts, "metadatas": lambda: db.metadatas,
             "embeddings": lambda: db.embeddings, "knn": lambda: db.knn(np.ones((1, 64), np.float32), 1),
             "list_jobs": lambda: db.deep_memory.list_jobs()}
    for name, call in calls.items():
        with pytest.raises(StoreError, match=CLOSED):
            call()
    db.close()  # a second close is harmless
    again = open_store(embedding=HashEmbeddings())
    assert again.search(TEXTS[1], k=1)[0].text == TEXTS[1]


@pytest.mark.parametrize("open_store", ["milvus-lite", "milvus-server"], indirect=True)
def test_ids_a_filter_string_cannot_hold_as_typed_work_as_on_hnswlib(open_store, tmp_path):
    reference = VectorStore(tmp_path / "hnswlib", embedding=HashEmbeddings())
    db = open_store(embedding=HashEmbeddings())
    for store in (reference, db):
        store.add_texts(TEXTS[:len(ODD_IDS)], ids=ODD_IDS)
        for odd in ODD_IDS:  # each is found again, so each is refused as a duplicate, the same way on both
            with pytest.raises(InputError, match=r"Duplicate ids \[.*\]: each id may appear once in the store"):
                store.add_texts(["a new text"], ids=[odd])
        store.add_texts(["a new text about sockets"], ids=["fresh"])
        assert store.ids == ODD_IDS + ["fresh"] and store.search(TEXTS[5], k=1)[0].id == "nul\x00byte"
    db.close()
    assert open_store(embedding=HashEmbeddings(), read_only=True).ids == reference.ids


# ------------------------------------------------------------------------------------ damaged Milvus Lite files
@pytest.fixture(scope="module")
def lite_file(tmp_path_factory) -> Path:
    """A Milvus Lite store written in two sessions (8 chunks, version 2), closed: each test damages a copy."""
    path = tmp_path_factory.mktemp("damaged") / "base.db"
    for texts in (TEXTS[:5], TEXTS[5:8]):
        db = VectorStore(path, embedding=HashEmbeddings())
        db.add_texts(texts)
        db.close()
    return path


def _newest(folder: Path, pattern: str) -> str:
    return str(sorted(folder.glob(pattern))[-1].relative_to(folder))


DAMAGE = {  # what the probe garbled (half the file, then junk), and where
    "the record's manifest": lambda db: "collections/chunks__dm/manifest.json",  # silently one write older
    "the chunks' manifest": lambda db: "collections/chunks__g1/manifest.json",  # silently 5 chunks of 8
    "a file of chunk rows": lambda db: _newest(db, "collections/chunks__g1/partitions/_default/data/*.parquet"),
    "a file of the record": lambda db: _newest(db, "collections/chunks__dm/partitions/_default/data/*.parquet"),
    "an index file": lambda db: _newest(db, "collections/chunks__g1/partitions/_default/indexes/*.idx"),
    "a schema": lambda db: "collections/chunks__g1/schema.json",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_milvus_lite_file_is_refused_as_damaged_and_left_as_it_is(lite_file, tmp_path, damage):
    path = tmp_path / "store.db"
    shutil.copytree(lite_file, path)
    target = path / DAMAGE[damage](path)
    target.write_bytes(target.read_bytes()[:target.stat().st_size // 2] + b"\x00garbled")
    before = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    with pytest.raises(StoreError) as refused:
        db = VectorStore(path, embedding=HashEmbeddings())
        db.search(TEXTS[6], k=3)  # where the damage shows only when rows are read
        assert len(db) == 8 and len(db.ids) == 8
        db.close()
    message = str(refused.value)
    assert message.startswith(f"The Milvus Lite file {path} is damaged (") and "server" not in message
    assert "OVERWRITE = True" in message and "move the file aside" in message and "notebook 01" in message
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == before  # nothing removed


def test_a_damaged_record_is_refused_at_a_write_too_and_overwrite_replaces_it(tmp_path):
    db = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    db.add_texts(TEXTS[:3])
    side = db.side
    head = json.loads(side.client.query(side.name, filter='key == "store"', output_fields=["data"])[0]["data"])
    head["sha256"] = hashlib.sha256(b"something else").hexdigest()  # the record's parts no longer match its head
    side.client.upsert(side.name, [{"key": "store", "data": json.dumps(head), "v": [0.0, 0.0]}])
    with pytest.raises(StoreError, match=r"The store .* is damaged: its record cannot be read .*notebook 01"):
        db.add_texts(TEXTS[3:5])
    db.close()
    with pytest.raises(StoreError, match=r"is damaged: its record cannot be read"):
        VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    rebuilt = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings(), overwrite=True)  # what the message says
    assert len(rebuilt) == 0
    rebuilt.add_texts(TEXTS[5:7])
    rebuilt.close()
    again = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    assert again.texts == TEXTS[5:7] and again.search(TEXTS[6], k=1)[0].text == TEXTS[6]
    assert sorted(again.client.list_collections()) == ["chunks__dm", "chunks__g2"]  # the old rows are gone
    assert again.client.list_aliases()["aliases"] == ["chunks"]
    again.close()


@pytest.mark.parametrize("open_store", ["milvus-lite", "milvus-server"], indirect=True)
def test_a_record_older_than_its_chunks_is_refused_not_used(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS[:5])
    older = dict(db._record)
    db.add_texts(TEXTS[5:8])
    db.side.write_json("store", older)  # the side collection lost its last write (as when a manifest falls back)
    uri, physical = db.uri, db._record["physical"]
    db.close()
    with pytest.raises(StoreError, match=r"is damaged: its record is of version 1 but its chunks collection was "
                                         r"written by version 2, so its side collection '.*__dm' lost its last "
                                         r"writes\. Rebuild it with notebook 01"):
        open_store(embedding=HashEmbeddings())
    client = MilvusClient(uri)  # and nothing was deleted: the next write would have removed the 3 newer rows
    client.load_collection(physical)
    assert client.query(physical, filter="seq >= 0", output_fields=["count(*)"])[0]["count(*)"] == 8
    client.close()


# ------------------------------------------------------------------------------------ credentials in the URI
def test_a_password_in_the_uri_is_masked_in_every_message_and_repr(lite_server, tmp_path):
    secret = "pa55-W0rd-xyz"
    unreachable = f"http://reader:{secret}@127.0.0.1:{free_port()}"
    with pytest.raises(StoreError, match=r"Cannot reach Milvus at http://reader:\*\*\*@127\.0\.0\.1:") as refused:
        VectorStore(unreachable, embedding=HashEmbeddings(), timeout=5)
    uri = f"http://reader:{secret}@127.0.0.1:{lite_server.port}"
    db = VectorStore(uri, embedding=HashEmbeddings(), collection="masked", folder=tmp_path / "files")
    db.add_texts(TEXTS[:2])
    shown = [str(refused.value), repr(db), str(db.path)]
    with pytest.raises(StoreError, match="read_only=True needs an existing store") as missing:
        VectorStore(uri, embedding=HashEmbeddings(), collection="nothing_here", read_only=True,
                    folder=tmp_path / "files")
    db.close()
    with pytest.raises(StoreError) as closed:
        db.search("zip")
    shown += [str(missing.value), str(closed.value)]
    encoded = base64.b64encode(f"reader:{secret}".encode()).decode()
    for text in shown:
        assert secret not in text and secret.lower() not in text.lower() and encoded not in text, text
    assert "http://reader:***@127.0.0.1" in repr(db) and "reader:***@" in str(closed.value)


def test_an_ordinary_request_error_on_a_healthy_lite_file_is_not_called_damage(tmp_path):
    db = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    db.add_texts(TEXTS[:3], metadatas=[{"topic": "zip"}, {"topic": "csv"}, {"topic": "json"}])
    client, physical = db.client, db._record["physical"]
    row = {"id": "x", "seq": 3, "text": "t", "metadata": "not json {", "vector": [0.0] * 64}

    def load_collection(name):  # a file-reading step whose error quotes the file's path and mentions json and EOF
        raise MilvusException(message=f"collection {name!r} in {db.uri}: json field 'metadata', expecting <EOF>")

    requests = {  # step, call, arguments: each fails on a healthy file, for a reason of its own
        "a filter that does not parse": ("read rows", client.query, physical,
                                         {"filter": 'json_contains(metadata["topic"], ', "output_fields": ["id"]}),
        "a filter of the wrong type": ("read rows", client.query, physical,
                                       {"filter": 'metadata["topic"] > "a" + 1', "output_fields": ["id"]}),
        "metadata that is not JSON": ("insert rows", client.insert, physical, {"data": [row]}),
        "a message quoting the path": ("load the collection", load_collection, physical, {}),
    }
    for name, (what, call, collection, kwargs) in requests.items():
        with pytest.raises(StoreError) as failed:
            db.connection.call(what, call, collection, **kwargs)
        message = str(failed.value)
        assert message.startswith(f"Milvus Lite could not {what} in "), (name, message)
        assert "damaged" not in message and "move the file aside" not in message, (name, message)
    assert db.texts == TEXTS[:3] and db.search(TEXTS[1], k=1)[0].text == TEXTS[1]  # the file is healthy
    db.close()


def test_a_damaged_manifest_of_another_store_in_the_file_does_not_refuse_this_one(tmp_path):
    path = tmp_path / "shared.db"
    for collection in ("chunks", "chunks__x"):  # "chunks__x" is a name of its own, not one of the store "chunks"
        db = VectorStore(path, embedding=HashEmbeddings(), collection=collection)
        db.add_texts(TEXTS[:4] if collection == "chunks" else TEXTS[4:7])
        db.close()
    other = path / "collections" / "chunks__x__g1"
    manifest = other / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:manifest.stat().st_size // 2] + b"\x00garbled")
    before = {str(p.relative_to(other)): p.read_bytes() for p in sorted(other.rglob("*")) if p.is_file()}
    db = VectorStore(path, embedding=HashEmbeddings())  # the store "chunks": its own collections are intact
    assert db.texts == TEXTS[:4] and db.search(TEXTS[2], k=1)[0].text == TEXTS[2]
    db.add_texts(TEXTS[8:10])
    db.close()
    assert {str(p.relative_to(other)): p.read_bytes() for p in sorted(other.rglob("*")) if p.is_file()} == before
    with pytest.raises(StoreError, match=r"is damaged \(the manifest of its collection 'chunks__x__g1' cannot be read"):
        VectorStore(path, embedding=HashEmbeddings(), collection="chunks__x")  # that store is refused, as before
