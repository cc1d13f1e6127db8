"""Faults of a Milvus store: a server unreachable at open or gone mid-write, a text over Milvus's VARCHAR limit, a
collection the package did not make, and a second writer. Each is a clear error naming the URI or the limit, and
the store holds exactly what it held before."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO, HashEmbeddings, LiteServer, free_port
from pymilvus import DataType, MilvusClient

from dmhelpers import InputError, StoreError, StoreLockedError, VectorStore
from dmhelpers.store import milvus_store

TEXTS = [f"chunk {i} about zip archives, csv rows and json documents, case number {i}" for i in range(6)]
MORE = [f"a new chunk {i} about heaps, queues and hash digests, case {i}" for i in range(4)]


def count_rows(uri: str, collection: str) -> int:
    """Every row of the store's collection, counted or not: what Milvus really holds."""
    client = MilvusClient(uri)
    try:
        rows = client.query(collection, filter="seq >= 0", output_fields=["count(*)"], consistency_level="Strong")
        return rows[0]["count(*)"]
    finally:
        client.close()


def reopen(uri: str, seconds: float) -> VectorStore:
    """The store, opened as soon as the client reconnects (gRPC waits a little before retrying a lost channel)."""
    end = time.monotonic() + seconds
    while True:
        try:
            return VectorStore(uri, embedding=HashEmbeddings(), collection="docs")
        except StoreError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_an_unreachable_server_is_a_clear_error_at_once():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(StoreError, match=rf"Cannot reach Milvus at {uri} .*Check that the server is running .*"
                                         r"nothing was written"):
        VectorStore(uri, embedding=HashEmbeddings())
    assert time.monotonic() - start < 15


def test_a_server_gone_mid_write_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    server = LiteServer(tmp_path / "data")
    try:
        db = VectorStore(server.uri, embedding=HashEmbeddings(), collection="docs")
        db.add_texts(TEXTS, ids=[f"c{i}" for i in range(6)])
        monkeypatch.setattr(milvus_store, "INSERT_BYTES", 1)  # one row per insert call
        real_insert, calls = db.client.insert, []

        def insert_then_die(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                server.stop()  # two rows of this write have reached Milvus; the server goes away now
            return real_insert(*args, **kwargs)

        monkeypatch.setattr(db.client, "insert", insert_then_die)
        with pytest.raises(StoreError, match=rf"Adding 4 chunks to the store {server.uri} \(collection 'docs'\) "
                                             r"failed: .*The store is unchanged: it still holds its 6 chunks"):
            db.add_texts(MORE, ids=[f"n{i}" for i in range(4)])
        with pytest.raises(StoreError, match=rf"Milvus at {server.uri} could not search .*server is running"):
            db.search("zip archives")
        monkeypatch.undo()
        server = LiteServer(tmp_path / "data", port=server.port)  # the same data, back again
        again = reopen(server.uri, seconds=20)
        assert len(again) == 6 and again.ids == [f"c{i}" for i in range(6)]
        # Rows that got through before the server went are there (Milvus Lite may lose the last one it acknowledged
        # when stopped), but they are never found:
        assert count_rows(server.uri, "docs") > 6
        assert {h.id for h in again.search(MORE[:2], k=10)[0]} <= {f"c{i}" for i in range(6)}
        again.add_texts(MORE, ids=[f"n{i}" for i in range(4)])  # the next write removes them and adds its own
        assert count_rows(server.uri, "docs") == 10 and len(again) == 10
        assert again.search(MORE[1], k=1)[0].id == "n1"
        again.close()
    finally:
        server.stop()


@pytest.mark.parametrize("open_store", ["milvus-lite", "milvus-server"], indirect=True)
def test_a_text_over_the_varchar_limit_is_refused_before_anything_is_written(open_store):
    db = open_store(embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    with pytest.raises(InputError, match=r"Text 1 is 70,000 bytes long: a Milvus store holds at most 65,535 bytes "
                                         r"per chunk\. Split it \(a smaller CHUNK_SIZE\)"):
        db.add_texts(["short", "é" * 35_000])
    with pytest.raises(InputError, match=r"longer than 64 bytes"):
        db.add_texts(["fine"], ids=["x" * 65])
    assert len(db) == 6 and db.version == 1


def test_a_collection_this_package_did_not_make_is_left_alone(lite_server):
    client = MilvusClient(lite_server.uri)
    schema = client.create_schema(auto_id=True)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
    client.create_collection("someone_elses", schema=schema)
    with pytest.raises(StoreError, match=r"already holds a collection 'someone_elses' that this package did not make"
                                         r".*Choose another collection= name"):
        VectorStore(lite_server.uri, collection="someone_elses", embedding=HashEmbeddings()).add_texts(["x"])
    assert client.has_collection("someone_elses") and not client.has_collection("someone_elses__dm")
    client.close()


def test_a_second_writer_on_a_server_store_is_refused_until_the_first_is_done(lite_server):
    first = VectorStore(lite_server.uri, collection="two_writers", embedding=HashEmbeddings())
    first.add_texts(TEXTS[:3])
    second = VectorStore(lite_server.uri, collection="two_writers", embedding=HashEmbeddings())
    owner = first.side.lock(first.where)  # the first writer is in the middle of a write
    with pytest.raises(StoreLockedError, match=r"two_writers'\) is locked: another process .* is writing to it\. "
                                               r"Wait for it to finish"):
        second.add_texts(TEXTS[3:])
    first.side.unlock(owner)
    second.side.write_json("lock", {"owner": f"{socket.gethostname()}:{2**22 + 1}:gone", "expires": time.time() + 60})
    second.add_texts(TEXTS[3:])  # a lease of a process of this machine that no longer runs is taken over
    assert len(VectorStore(lite_server.uri, collection="two_writers", embedding=HashEmbeddings(),
                           read_only=True)) == 6


OPEN_IN_A_SECOND_PROCESS = """
import sys
from helpers import HashEmbeddings
from dmhelpers import VectorStore
try:
    VectorStore(sys.argv[1], embedding=HashEmbeddings())
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_second_process_on_a_milvus_lite_file_is_refused_clearly(tmp_path):
    db = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    out = subprocess.run([sys.executable, "-c", OPEN_IN_A_SECOND_PROCESS, str(tmp_path / "s.db")],
                         capture_output=True, text=True, cwd=REPO / "tests").stdout
    assert out.startswith("StoreLockedError") and "Milvus Lite allows one process per .db file" in out
    assert "milvus-lite server" in out and len(db) == 6
    db.close()  # after close() another process opens it: test_store_backends' reopen test
