"""LLM errors while writing questions, against a fake OpenAI-compatible chat server on 127.0.0.1.

Rate limits (429) and timeouts are retried with backoff by the ``openai`` client (``max_retries``; the server's
``retry-after-ms`` keeps the waits short here); when they persist the run stops with an error that says what
happened and that the questions written so far are kept in the cache. Unusable replies (invalid JSON, a reply
body that is not JSON at all, a refusal) are asked again, then reported per question while the run goes on.
Either way a rerun resumes from the cache and asks the server only for the questions it is missing.

Most tests send one request at a time (``concurrency=1``) so they can check the exact sequence of requests; the
last ones send several at once, as the default does. These are what a real server cannot be made to do on cue;
the same flow against the real local model is in ``tests/local_llm``.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import chat_completion, chunk_asked_about, send_reply

from dmhelpers import QuestionGenerationError, generate_questions

TOPICS = ["reading members of a zip archive", "writing rows to a csv file", "parsing a json document",
          "replacing text with a regular expression", "walking a folder tree with pathlib",
          "measuring a short duration with a clock", "pushing items onto a heap", "hashing bytes with sha256",
          "creating a temporary directory", "parsing command line options"]
# Ten chunks with enough prose to ask about (generate_questions skips chunks with fewer than 20 plain words).
CORPUS = {f"chunk-{i}": f"This part of the documentation is about {topic}. It explains which function to call, which "
                        f"arguments it takes, what it returns and which errors it raises when the input is wrong, with "
                        f"a short example that shows the usual way of {topic}."
          for i, topic in enumerate(TOPICS)}
TEXTS, IDS = list(CORPUS.values()), list(CORPUS)
N = 6  # questions per run: the walk visits six of the ten chunks when every answer is usable


def chunk_of(body: dict) -> str:
    return chunk_asked_about(body, CORPUS)


def question_for(chunk_id: str) -> str:
    return f"Where do the docs explain {TOPICS[int(chunk_id.split('-')[1])]}?"


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict | None = None  # None: a good answer for the request's chunk
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str | None = None  # default: application/json for a dict body, text/html for bytes


def answer(content: str | None = None, refusal: str | None = None) -> dict:
    return chat_completion(content, refusal=refusal)


def rate_limited(retry_ms: int | None = 20) -> Reply:
    headers = {"retry-after-ms": str(retry_ms)} if retry_ms is not None else {}
    return Reply(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                 "code": "rate_limit_exceeded"}}, headers)


@dataclass
class Logged:
    at: float
    chunk: str
    status: int


class FakeChat:
    """A /v1/chat/completions endpoint whose replies come from ``script(chunk_id, nth request overall)``."""

    def __init__(self, script: Callable[[str, int], Reply]) -> None:
        self.script, self.log, self._lock = script, [], threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                chunk = chunk_of(body)
                with fake._lock:
                    nth = len(fake.log)
                    reply = fake.script(chunk, nth)
                    fake.log.append(Logged(time.monotonic(), chunk, reply.status))
                time.sleep(reply.delay)
                payload = answer(question_for(chunk)) if reply.body is None else reply.body
                try:
                    send_reply(self, reply.status, payload, reply.content_type, reply.headers)
                except OSError:  # the client gave up waiting (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def chunks(self) -> list[str]:
        return [entry.chunk for entry in self.log]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def chat(monkeypatch) -> Iterator[Callable[[Callable[[str, int], Reply]], FakeChat]]:
    servers: list[FakeChat] = []

    def start(script: Callable[[str, int], Reply]) -> FakeChat:
        server = FakeChat(script)
        servers.append(server)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        return server

    yield start
    for server in servers:
        server.close()


def good(chunk: str, nth: int) -> Reply:
    return Reply()


def run(cache: Path | None, **kwargs) -> tuple[list[str], list[list[tuple[str, float]]]]:
    return generate_questions(TEXTS, IDS, kwargs.pop("n", N), llm="fake-model", cache=cache, progress=False,
                              **{"max_retries": 2, "timeout": 5.0, "concurrency": 1, **kwargs})


def cached(cache: Path) -> list[str]:
    return [json.loads(line)["chunk_id"] for line in cache.read_text().splitlines()]


@pytest.fixture()
def reference(chat, tmp_path) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """What a run with a healthy server gives (the order of chunks is seeded)."""
    server = chat(good)
    result = run(tmp_path / "reference.jsonl")
    server.close()
    assert len(result[0]) == N
    return result


def order(reference) -> list[str]:
    return [rel[0][0] for rel in reference[1]]


# ----------------------------------------------------------------------------------------------- rate limits
def test_rate_limit_is_retried_after_the_servers_retry_after(chat, tmp_path, reference):
    first = order(reference)[0]
    server = chat(lambda chunk, nth: rate_limited(retry_ms=150) if nth < 2 else Reply())
    assert run(tmp_path / "q.jsonl") == reference
    assert [e.status for e in server.log[:3]] == [429, 429, 200] and server.chunks[:3] == [first] * 3
    gaps = [b.at - a.at for a, b in zip(server.log, server.log[1:3])]
    assert all(gap >= 0.14 for gap in gaps), gaps  # waited as the server asked, not hammering it
    assert len(server.log) == N + 2 and cached(tmp_path / "q.jsonl") == order(reference)


def test_rate_limit_without_a_hint_backs_off_exponentially(chat, tmp_path, reference):
    server = chat(lambda chunk, nth: rate_limited(retry_ms=None) if nth < 2 else Reply())
    assert run(tmp_path / "q.jsonl", n=1) == (reference[0][:1], reference[1][:1])
    first_wait, second_wait = (b.at - a.at for a, b in zip(server.log, server.log[1:3]))
    assert first_wait >= 0.3 and second_wait >= 1.4 * first_wait, (first_wait, second_wait)


def test_a_lasting_rate_limit_stops_the_run_keeps_the_cache_and_a_rerun_asks_only_for_the_rest(
        chat, tmp_path, reference):
    cache = tmp_path / "q.jsonl"
    server = chat(lambda chunk, nth: Reply() if nth < 3 else rate_limited(retry_ms=10))
    with pytest.raises(QuestionGenerationError) as info:
        run(cache, max_retries=2)
    message = str(info.value)
    assert "429" in message and "Rate limit reached" in message and "wait out a rate limit" in message
    assert f"kept in {str(cache)!r}; rerun to resume" in message
    assert len(server.log) == 3 + 3  # three answers, then one request tried three times (two retries)
    assert cached(cache) == order(reference)[:3]

    again = chat(good)
    assert run(cache) == reference
    assert again.chunks == order(reference)[3:]  # only the missing questions are asked for


# ----------------------------------------------------------------------------------------------- timeouts
def test_a_timeout_is_retried(chat, tmp_path, reference):
    server = chat(lambda chunk, nth: Reply(delay=1.0) if nth == 0 else Reply())
    start = time.monotonic()
    assert run(tmp_path / "q.jsonl", timeout=0.3, max_retries=1) == reference
    assert server.chunks[:2] == [order(reference)[0]] * 2 and len(server.log) == N + 1
    assert server.log[1].at - server.log[0].at >= 0.3 + 0.3  # the timeout, then a backoff before the retry
    assert time.monotonic() - start < 5


def test_a_lasting_timeout_stops_the_run_and_a_rerun_resumes(chat, tmp_path, reference):
    cache = tmp_path / "q.jsonl"
    server = chat(lambda chunk, nth: Reply() if nth < 2 else Reply(delay=1.0))
    with pytest.raises(QuestionGenerationError, match=r"chat server failed .*Request timed out.*rerun to resume"):
        run(cache, timeout=0.2, max_retries=1)
    assert len(server.log) == 2 + 2 and cached(cache) == order(reference)[:2]
    again = chat(good)
    assert run(cache) == reference and again.chunks == order(reference)[2:]


# ----------------------------------------------------------------------------------------------- unusable replies
REFUSAL = "I can't help with that."


def test_unusable_replies_are_asked_again_then_reported_per_question(chat, tmp_path, reference, capsys):
    """One chunk always gets a reply with no question, one a refusal, one an HTML page from a proxy, one a torn
    JSON body; a fifth gets a reply with no question once and then a good answer. The run goes on with other chunks."""
    walk = order(reference)
    bad = {walk[0]: Reply(body=answer("Sure! Here is your question: what is a zip file")),
           walk[1]: Reply(body=answer(None, refusal=REFUSAL)),
           walk[2]: Reply(body=b"<html><body>502 Bad Gateway</body></html>"),
           walk[3]: Reply(body=b'{"id": "chatcmpl-test", "choices": [{"index": 0, "mess',
                          content_type="application/json")}
    once = {"seen": False}

    def script(chunk: str, nth: int) -> Reply:
        if chunk == walk[4] and not once["seen"]:
            once["seen"] = True
            return Reply(body=answer("How do I"))  # cut off before its question mark, then fine when asked again
        return bad.get(chunk, Reply())

    cache = tmp_path / "q.jsonl"
    server = chat(script)
    questions, relevance = run(cache, n=N)
    got = [rel[0][0] for rel in relevance]
    assert len(questions) == N and not set(got) & set(bad) and walk[4] in got
    assert questions == [question_for(c) for c in got]
    for chunk in bad:
        assert server.chunks.count(chunk) == 3  # asked, then asked again twice
    assert server.chunks.count(walk[4]) == 2
    out = capsys.readouterr().out
    assert "Skipped 4 chunk(s) the model gave no usable question for:" in out
    assert f"{walk[0]}: no question mark: 'Sure! Here is your question" in out
    assert f"{walk[1]}: refused: {REFUSAL}" in out
    assert f"{walk[2]}: the server's reply was not a chat completion: '<html>" in out
    assert f"{walk[3]}: the server's reply was not JSON" in out
    assert sorted(cached(cache)) == sorted(got)  # only usable questions are cached

    # A rerun against a healthy server asks only about the four chunks that had no question.
    again = chat(good)
    assert run(cache) == reference
    assert sorted(again.chunks) == sorted(bad)


# ----------------------------------------------------------------------------------------------- several in flight
def test_requests_are_sent_concurrently_up_to_the_limit_and_the_result_does_not_change(chat, tmp_path, reference):
    server = chat(lambda chunk, nth: Reply(delay=0.5))
    start = time.monotonic()
    assert run(tmp_path / "q.jsonl", concurrency=3) == reference
    took = time.monotonic() - start
    # Three at a time from the first request: 2 rounds of 0.5 s, not 6.
    assert took < 0.5 * 3.5, took
    starts = sorted(entry.at for entry in server.log)
    assert len(starts) == N and starts[2] - starts[0] < 0.25 and starts[3] - starts[0] >= 0.4


def test_a_lasting_rate_limit_with_requests_in_flight_keeps_every_answer_and_a_rerun_asks_only_for_the_rest(
        chat, tmp_path, reference):
    cache = tmp_path / "q.jsonl"
    server = chat(lambda chunk, nth: Reply() if nth < 3 else rate_limited(retry_ms=10))
    with pytest.raises(QuestionGenerationError, match="Rate limit reached.*rerun to resume"):
        run(cache, concurrency=4, max_retries=1)
    answered = {entry.chunk for entry in server.log if entry.status == 200}
    assert len(answered) == 3 and sorted(cached(cache)) == sorted(answered)  # every answer was kept, once

    again = chat(good)
    assert run(cache, concurrency=4) == reference
    assert sorted(again.chunks) == sorted(set(order(reference)) - answered)
