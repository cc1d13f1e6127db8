"""An API key or token that a server echoes back never reaches a message, however the server spells it:
lower- or upper-cased, or as base64 (issue 20: a lower-cased echo leaked the key; an exact echo is masked since
test_safety's test_a_server_that_echoes_a_wrong_key_does_not_get_it_into_messages)."""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import send_reply

from dmhelpers import EmbeddingError, OpenAIEmbeddings, QuestionGenerationError, generate_questions
from dmhelpers.utils.errors import redact

KEY = "sk-test-MixedCase-Key-42"
CHUNK = ("ZipFile.read(name) returns the bytes of a member of a zip archive; open the archive first, then call read "
         "with the member's name, and close it when done, or use a with block so that it is closed for you.")
SPELLINGS = {"lower-cased": str.lower, "upper-cased": str.upper,
             "base64": lambda k: base64.b64encode(k.encode()).decode()}


class EchoingServer(BaseHTTPRequestHandler):
    """Refuses every request with a 401 that quotes the key in the spelling of :attr:`spell`."""

    spell = staticmethod(str)

    def do_POST(self):  # noqa: N802 - stdlib name
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        send_reply(self, 401, {"error": {"message": f"Incorrect API key provided: {type(self).spell(key)}.",
                                         "type": "invalid_request_error"}})

    def log_message(self, *args):
        pass


@pytest.fixture()
def echoing_server(monkeypatch) -> Iterator[type[EchoingServer]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingServer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    yield EchoingServer
    EchoingServer.spell = staticmethod(str)
    server.shutdown()
    server.server_close()


def _leaks(text: str) -> list[str]:
    return [name for name, spell in {"as sent": str, **SPELLINGS}.items() if spell(KEY).lower() in text.lower()]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_echoed_key_is_masked_in_every_spelling(echoing_server, tmp_path, capfd, spelling):
    echoing_server.spell = staticmethod(SPELLINGS[spelling])
    with pytest.raises(EmbeddingError, match=r"Incorrect API key provided: \*\*\*") as embed_error:
        OpenAIEmbeddings("fake-embedder", max_retries=0).embed(["x"])
    with pytest.raises(QuestionGenerationError, match=r"Incorrect API key provided: \*\*\*") as chat_error:
        generate_questions([CHUNK], ["c0"], 1, llm="fake-chat",
                           cache=tmp_path / "cache.jsonl", max_retries=0, progress=False)
    out, err = capfd.readouterr()
    for text in (str(embed_error.value), str(chat_error.value), out, err):
        assert _leaks(text) == [], text
    assert not (tmp_path / "cache.jsonl").exists() or KEY.lower() not in (tmp_path / "cache.jsonl").read_text().lower()


def test_redact_masks_the_milvus_token_and_given_secrets_in_any_case(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MILVUS_TOKEN", "root:Tok3n-Secret")
    basic = base64.b64encode(b"root:Tok3n-Secret").decode()
    text = redact(f"token ROOT:TOK3N-SECRET, header Basic {basic}, key {KEY.upper()}, password Pa55word-x",
                  "Pa55word-x")
    assert text == "token ***, header Basic ***, key ***, password ***"
    assert redact("Milvus at http://x could not search", "abc") == "Milvus at http://x could not search"
    assert json.loads(redact(json.dumps({"message": KEY.lower()}))) == {"message": "***"}


def test_a_secret_that_is_a_plain_word_masks_only_itself_and_a_key_is_masked_in_any_case(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "EMPTY")  # the dummy key of local servers (vLLM, Ollama)
    monkeypatch.delenv("MILVUS_TOKEN", raising=False)
    basic = base64.b64encode(b"root:Milvus").decode()  # the URI http://root:Milvus@host: Milvus's default login
    reply = (f"<MilvusException: (code=1, message=collection is empty, see milvus-lite)> root:Milvus@host, "
             f"Basic {basic}, ROOT:MILVUS, password Milvus, key EMPTY")
    assert redact(reply, "root:Milvus", "Milvus") == ("<MilvusException: (code=1, message=collection is empty, see "
                                                      "milvus-lite)> ***@host, Basic ***, ***, password ***, key ***")
    assert redact("Empty input: the list is empty. EMPTYING", "Milvus") == "Empty input: the list is empty. EMPTYING"
    assert redact("MILVUS_URI and milvus_lite, MilvusClient", "Milvus") == "MILVUS_URI and milvus_lite, MilvusClient"
    long_letters = "QwErTyUiOpAsDfGhJkLzXcVbNm"  # letters only, but too long for a word: masked in any case
    assert redact(f"echo {long_letters.lower()} {long_letters.upper()}", long_letters) == "echo *** ***"
    for key in ("sk-proj-Ab12Cd34", "hf_AbCdEfGh12", "Tok3n"):  # keys: masked however they are echoed
        assert redact(f"got {key.lower()} / {key.upper()} / {key}", key) == "got *** / *** / ***"
