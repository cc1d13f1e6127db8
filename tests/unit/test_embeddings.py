from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import send_reply

from dmhelpers import EmbeddingError, InputError, LocalEmbeddings, OpenAIEmbeddings, get_embedding


def test_local_embeddings_are_normalised_float32_and_meaningful(embedder):
    vectors = embedder.embed(["How do I read a zip file?", "ZipFile.read returns the bytes of an archive member.",
                              "The csv module writes comma-separated rows."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.max_tokens == 256 and embedder.count_tokens(["zip file"]) == [4]


def test_embedder_input_errors(embedder):
    with pytest.raises(InputError, match="single string"):
        embedder.embed("not a list")
    with pytest.raises(InputError, match="item 1 is int"):
        embedder.embed(["ok", 3])


def test_get_embedding_names():
    assert isinstance(get_embedding("local"), LocalEmbeddings)
    assert get_embedding("text-embedding-3-small").dimension == 1536
    assert get_embedding("sentence-transformers/all-mpnet-base-v2").name == "sentence-transformers/all-mpnet-base-v2"
    with pytest.raises(InputError, match="EMBEDDING must be"):
        get_embedding("")


def test_unknown_local_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbeddingError, match="needs a network"):
        LocalEmbeddings("no-such-org/no-such-model").embed(["x"])


def test_openai_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EmbeddingError, match="needs OPENAI_API_KEY.*EMBEDDING = 'local'"):
        OpenAIEmbeddings().embed(["x"])


class FakeEmbeddingsServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/embeddings endpoint that rate-limits its first request."""

    calls: list[list[str]] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body["input"])
        if len(type(self).calls) == 1:
            payload, status = {"error": {"message": "slow down", "type": "rate_limit"}}, 429
        else:
            data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
                    for i, t in enumerate(body["input"])]
            payload, status = {"object": "list", "data": data[::-1], "model": body["model"],
                               "usage": {"prompt_tokens": 1, "total_tokens": 1}}, 200
        send_reply(self, status, payload, headers={"retry-after-ms": "10"})

    def log_message(self, *args):
        pass


def test_openai_compatible_server_batches_retries_and_orders(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddingsServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    try:
        emb = OpenAIEmbeddings("my-embedder", batch_size=2)
        vectors = emb.embed(["a", "bb", "ccc"])
    finally:
        server.shutdown()
    assert FakeEmbeddingsServer.calls == [["a", "bb"], ["a", "bb"], ["ccc"]]  # 429 retried, then batches of 2
    expected = np.array([[1, 1, 0], [2, 1, 0], [3, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)
    assert emb.dimension == 3
