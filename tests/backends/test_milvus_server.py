"""One end-to-end run against a genuine Milvus standalone server (``milvus-server`` from the ``milvus==2.3.5`` wheel,
which ``make setup`` installs): what the notebooks do, through the same client code a production cluster gets.

The server is started here with its own data folder and a free proxy port, and stopped with SIGINT to the
wrapper's PID (SIGTERM would leave its child running). Where it is not installed, or does not answer within a
minute, the test is skipped and says why.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HashEmbeddings, free_port, wait_for_port
from pymilvus import MilvusClient

from dmhelpers import StoreError, VectorStore

TEXTS = [f"chunk {i} on {topic}: open it, call the method, check the result, close it, case {i}"
         for i, topic in enumerate(["zip archives", "csv rows", "json documents", "regular expressions",
                                    "file paths", "dates and times", "heaps and queues", "hash digests",
                                    "temporary folders", "command lines"] * 2)]
EMBEDDER = HashEmbeddings("test/hash-256", 256)  # wide enough that every question's chunk comes first
QUESTIONS = [f"how do I handle {t.split(' on ')[1].split(':')[0]} in case {i}" for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    cli = Path(sys.executable).parent / "milvus-server"
    if not cli.exists():
        pytest.skip("milvus-server is not installed (the milvus==2.3.5 wheel; `make setup` installs it)")
    data, port = tmp_path_factory.mktemp("milvus-server"), free_port()
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([str(cli), "--data", str(data / "data"), "--proxy-port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        if not wait_for_port(port, 60, proc) or not _answers(uri, 30):
            pytest.skip(f"milvus-server did not answer within a minute here: "
                        f"{(data / 'server.log').read_text(errors='replace')[-300:]!r}")
        yield uri
    finally:
        proc.send_signal(signal.SIGINT)  # the wrapper stops its milvus child on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def _answers(uri: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            client = MilvusClient(uri, timeout=5)
            client.list_collections()
            client.close()
            return True
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(1)
    return False


def test_the_notebook_steps_on_a_real_milvus_server(milvus_server, tmp_path):
    db = VectorStore(milvus_server, collection="docs", embedding=EMBEDDER, folder=tmp_path / "side")
    ids = db.add_texts(TEXTS, metadatas=[{"source": f"https://docs/{i}.html"} for i in range(len(TEXTS))])
    assert db.search(QUESTIONS[3], k=1)[0].id == ids[3]
    assert [hits[0].id for hits in db.search(QUESTIONS[:4], k=5)] == ids[:4]
    job = db.deep_memory.train(QUESTIONS, [[(i, 1.0)] for i in ids], epochs=3)
    assert db.deep_memory.status(job)["status"] == "completed"
    db.close()

    reader = VectorStore(milvus_server, collection="docs", embedding=EMBEDDER, read_only=True)
    assert reader.ids == ids and reader.deep_memory.get_model() == job
    assert reader.search(QUESTIONS[5], k=1, deep_memory=True)[0].id == ids[5]
    assert len(reader.as_retriever(k=3, deep_memory=True).invoke(QUESTIONS[7])) == 3
    report = reader.deep_memory.evaluate(QUESTIONS, [[(i, 1.0)] for i in ids], top_k=[1, 10])
    assert report["with model"]["recall@10"] == 1.0

    fresh = VectorStore(milvus_server, collection="docs", embedding=EMBEDDER, overwrite=True)
    fresh.add_texts(TEXTS[:2])
    client = MilvusClient(milvus_server)
    assert client.describe_alias("docs")["collection_name"] == "docs__g2"  # others find it by its name
    assert not client.has_collection("docs__g1")
    client.close()
    with pytest.raises(StoreError, match="changed since it was opened"):
        reader._check_current()
    assert len(VectorStore(milvus_server, collection="docs", embedding=EMBEDDER, read_only=True)) == 2
