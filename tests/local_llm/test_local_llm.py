"""The LLM path against the real local chat server: llama.cpp's OpenAI-compatible server with the bundled
SmolLM2-135M-Instruct, started by ``local_llm()`` on 127.0.0.1 (once for most tests here) and stopped by its PID.

No fake: these are the quirks a real server has (a reply that runs on past its question, one request at a time, a
process that can die). The model's wording is not asserted, only what the package promises about it: a usable
question per chunk (not a copy), named by its chunk, cached as it arrives, the same at any concurrency
(temperature 0), and no server left running. Rate limits and timeouts, which a real server cannot be made to
produce on cue, are tested against a fake in ``tests/safety/test_llm_errors.py``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from helpers import CountingProxy, chunk_asked_about, server_processes

from dmhelpers import QuestionGenerationError, VectorStore, answer, generate_questions, local_llm
from dmhelpers.llm import MODEL_NAME, chat_endpoint, run_sync
from dmhelpers.llm import endpoint as endpoint_module
from dmhelpers.llm import local_server
from dmhelpers.questions.llm import ChatWriter
from dmhelpers.questions.passages import passages
from dmhelpers.questions.prompt import messages_for, parse_reply, rejected

CHUNKS = {
    "zipfile-read": "ZipFile.read(name) returns the bytes of the member called name in the archive. Open the archive "
                    "with ZipFile(path) first; use a with statement so the file is closed even when reading fails.",
    "csv-writer": "csv.writer(f) returns an object that turns lists of values into lines of comma-separated text. "
                  "Call writerow(row) for one row or writerows(rows) for many; open the file with newline='' first.",
    "json-loads": "json.loads(s) parses a string holding a JSON document and returns the Python object it describes: "
                  "dicts for objects, lists for arrays. It raises JSONDecodeError when the text is not valid JSON.",
    "re-sub": "re.sub(pattern, repl, string) returns the string with every match of the regular expression replaced "
              "by repl. Pass count=1 to replace only the first match, and flags=re.IGNORECASE to ignore case.",
    "pathlib-glob": "Path.rglob(pattern) walks a folder and all of its subfolders and yields every path that matches "
                    "the pattern, for example '*.txt' for all text files. Path.glob does the same in one folder.",
    "time-perf-counter": "time.perf_counter() returns a clock value in fractional seconds with the highest available "
                         "resolution. Call it before and after the code you measure and subtract the two values.",
    "heapq-push": "heapq.heappush(heap, item) adds an item to a list kept as a heap, so that heap[0] is always the "
                  "smallest item. heapq.heappop(heap) removes and returns that smallest item.",
    "hashlib-sha256": "hashlib.sha256(data) creates a hash object for the bytes data. Call update() to feed more "
                      "bytes and hexdigest() to get the digest as a string of hexadecimal digits.",
    "tempfile-dir": "tempfile.TemporaryDirectory() creates a new empty folder with a unique name. Used in a with "
                    "statement it yields the folder's path and deletes the folder and everything in it afterwards.",
    "argparse-option": "ArgumentParser.add_argument('--count', type=int, default=1) declares an optional command "
                       "line option. parse_args() reads sys.argv and returns an object with one attribute per option.",
    "datetime-parse": "datetime.strptime(text, format) parses a date written as text, such as '2024-05-17', into a "
                      "datetime object, following the format codes, for example '%Y-%m-%d' for year, month and day.",
    "shutil-copy": "shutil.copy2(src, dst) copies the file src to dst and keeps its metadata, such as the time it "
                   "was last modified. If dst is a folder, the file is copied into it under its own name.",
}
TEXTS, IDS = list(CHUNKS.values()), list(CHUNKS)
N = 10


def port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def chunk_of(body: dict) -> str:
    return chunk_asked_about(body, CHUNKS)


@pytest.fixture(scope="module")
def server():
    """One real server for the module; afterwards its process must be gone and its port closed."""
    with local_llm() as running:
        yield running
    assert running.process.poll() is not None and running.pid not in server_processes()
    assert not port_open(running.base_url)


@pytest.fixture(scope="module")
def written(server, tmp_path_factory):
    """Ten questions written one request at a time, with their cache: the reference for the other tests."""
    cache = tmp_path_factory.mktemp("questions") / "cache.jsonl"
    result = generate_questions(TEXTS, IDS, N, llm="local", cache=cache, concurrency=1, progress=False)
    return result, cache


def test_the_server_answers_the_prompt_in_plain_text_that_parses_to_a_question(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="no-key", max_retries=0)
    passage = passages(CHUNKS["json-loads"])[0]
    reply = client.chat.completions.create(model=server.model, messages=messages_for("module json", passage),
                                           temperature=0, max_tokens=64)
    question, reason = parse_reply(reply.choices[0].message.content)
    assert question and not reason and question.endswith("?")


def test_the_writer_asks_about_a_passage_and_returns_a_grounded_question(server):
    async def ask():
        with chat_endpoint("local", "test", "offline") as endpoint:
            async with endpoint.async_client() as client:
                passage = passages(CHUNKS["json-loads"])[0]
                writer = ChatWriter(client, endpoint.model)
                return await writer.ask("module json", passage, CHUNKS["json-loads"]), passage

    (question, reason), passage = run_sync(ask())
    assert question and not reason and not rejected(question, CHUNKS["json-loads"], passage, "module json")


def test_ten_chunks_get_a_question_each_written_through_the_real_server(written):
    (questions, relevance), cache = written
    assert len(questions) == N and len({q.lower() for q in questions}) == N
    chunks = [rel[0][0] for rel in relevance]
    assert len(set(chunks)) == N and set(chunks) <= set(IDS) and all(rel[0][1] == 1.0 for rel in relevance)
    for question, chunk in zip(questions, chunks):
        assert len(question.split()) >= 4 and not rejected(question, CHUNKS[chunk]), question
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert {(e["chunk_id"], e["question"]) for e in lines} == set(zip(chunks, questions))
    assert all(e["model"] == MODEL_NAME for e in lines)


def test_requests_go_concurrently_through_the_openai_path_and_give_the_same_questions(server, written, monkeypatch):
    """The same server reached as any OpenAI-compatible one (OPENAI_BASE_URL), through a proxy that counts the
    requests in flight: four at once, and the questions of the one-at-a-time run."""
    proxy = CountingProxy(server.base_url)
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    try:
        start = time.monotonic()
        result = generate_questions(TEXTS, IDS, N, llm=MODEL_NAME, concurrency=4, progress=False)
        took = time.monotonic() - start
    finally:
        proxy.close()
    assert result == written[0]
    first = [b for b in proxy.bodies if b["temperature"] == 0]  # one first attempt per chunk, then any retries
    assert proxy.peak == 4 and len(first) == N and len({chunk_of(b) for b in first}) == N
    assert all("response_format" not in b and b["max_tokens"] == 64 for b in proxy.bodies)
    print(f"{N} questions with 4 in flight: {took:.1f} s ({N / took:.2f}/s)")


def test_a_chat_answer_from_the_local_model(server, embedder, tmp_path):
    db = VectorStore(tmp_path / "store", embedding=embedder)
    db.add_texts(TEXTS, ids=IDS, metadatas=[{"source": f"https://docs.example/{cid}.html"} for cid in IDS])
    result = answer("How do I read one file out of a zip archive?", db.as_retriever(k=3), llm="local")
    assert result.kind == "generated" and result.model == MODEL_NAME and result.text.strip()
    assert result.prompt_tokens > 100 and "https://docs.example/zipfile-read.html" in result.sources


def test_the_cache_resumes_after_the_server_is_killed_mid_run(server, written, tmp_path, monkeypatch):
    cache = tmp_path / "cache.jsonl"
    with local_llm() as doomed:  # the innermost open server: the run below uses it
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(generate_questions, TEXTS, IDS, N, llm="local", cache=cache, concurrency=2,
                              max_retries=1, progress=False)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not run.done() and (
                    not cache.exists() or len(cache.read_text().splitlines()) < 3):
                time.sleep(0.05)
            os.kill(doomed.pid, signal.SIGKILL)
            with pytest.raises(QuestionGenerationError, match="rerun to resume"):
                run.result(timeout=120)
    assert doomed.process.poll() is not None and doomed.pid not in server_processes()
    before = [json.loads(line) for line in cache.read_text().splitlines()]
    assert 3 <= len(before) < N

    proxy = CountingProxy(server.base_url)  # the rerun, through the module's server: only the rest is asked
    monkeypatch.setenv("OPENAI_BASE_URL", proxy.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    try:
        assert generate_questions(TEXTS, IDS, N, llm=MODEL_NAME, cache=cache, progress=False) == written[0]
    finally:
        proxy.close()
    asked = {chunk_of(b) for b in proxy.bodies}
    assert not asked & {e["chunk_id"] for e in before} and len(asked) == N - len(before)
    after = [json.loads(line) for line in cache.read_text().splitlines()]
    assert after[:len(before)] == before and len(after) == N  # appended only, no chunk asked twice


def test_a_call_with_no_open_server_starts_one_and_stops_it(monkeypatch):
    started = []
    real_start = local_server._start
    monkeypatch.setattr(endpoint_module, "open_server", lambda: None)  # as if no local_llm() block were open
    monkeypatch.setattr(local_server, "_start", lambda *a: started.append(real_start(*a)) or started[-1])
    questions, _ = generate_questions(TEXTS, IDS, 1, llm="local", progress=False)
    assert len(questions) == 1 and len(started) == 1
    assert started[0].process.poll() is not None and not port_open(started[0].base_url)
    assert started[0].pid not in server_processes() and not started[0].log.exists()


def test_a_block_stops_its_server_by_pid_when_its_body_fails():
    with pytest.raises(RuntimeError, match="boom"), local_llm() as running:
        assert port_open(running.base_url) and running.pid in server_processes()
        raise RuntimeError("boom")
    assert running.process.poll() is not None and running.pid not in server_processes()
    assert not port_open(running.base_url)
