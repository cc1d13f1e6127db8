"""Run the notebooks with papermill as a workshop would (``PRESET = "workshop"``), in order, and assert on what they
recorded and that none of them printed to stderr."""
from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import papermill
import pytest
from helpers import NOTEBOOKS, chat_completion, executed, send_reply

from dmhelpers import (WORKSHOP_PAGES, VectorStore, get_all_links, load_pages, load_questions, open_site,
                       pages_to_documents, split_documents, unique_documents)
from dmhelpers.tooling.notebooks import KERNEL, execute, summarise


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One folder for the workshop-preset run: store, figures and executed notebooks."""
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def notebook_01(run, python_docs):
    return executed(run, "01_dataset_creation.ipynb", {
        "PRESET": "workshop", "STORE_PATH": str(run / "store"), "DOCS_CACHE": str(python_docs),
        "FIGURE_DIR": str(run / "figures")})


@pytest.fixture(scope="module")
def notebook_02(run, notebook_01):
    return executed(run, "02_query_synthesis_and_training.ipynb", {
        "STORE_PATH": str(run / "store"), "FIGURE_DIR": str(run / "figures")})


def test_01_builds_the_workshop_store_that_answers_the_demo_question(run, notebook_01):
    assert notebook_01["pages"] == len(WORKSHOP_PAGES) and notebook_01["failed"] == 0
    db = VectorStore(run / "store", read_only=True)
    assert notebook_01["chunks"] == len(db) > 200
    assert {m["source"] for m in db.metadatas} == {f"docs://python/{page}" for page in WORKSHOP_PAGES}
    assert notebook_01["demo_top_source"] == "zipfile.html"
    assert (run / "figures" / "01_chunk_lengths.png").stat().st_size > 10_000


def test_no_chunk_of_the_default_or_the_workshop_corpus_holds_an_html_entity(run, notebook_01, python_docs):
    with open_site(str(python_docs)) as url:  # the default corpus, chunked as 01 does (no embedding needed)
        pages, failed = load_pages(get_all_links(url, include_start=False), progress=False)
    chunks = unique_documents(split_documents(pages_to_documents(pages), chunk_size=800, chunk_overlap=80))
    workshop = VectorStore(run / "store", read_only=True).texts
    assert not failed and len(chunks) > 1600 and len(workshop) > 200
    # the entities a reader would trip over; html.unescape's docstring keeps its literal (and invalid) "&x3e;"
    shown = re.compile(r"&(?:lt|gt|amp|quot|apos|#\d+|#[xX][0-9a-fA-F]+);")
    assert [t[:80] for t in [c.page_content for c in chunks] + workshop if shown.search(t)] == []


def test_02_writes_questions_trains_and_saves_the_split(run, notebook_02):
    rec = notebook_02
    assert rec["n_questions"] == 200 and rec["n_train"] == rec["n_test"] == 100 and rec["llm"] == "local"
    # repeat questions about a chunk are no closer to each other than real users' are
    assert rec["siblings"]["n"] > 50 and rec["siblings"]["median"] <= 0.94 and rec["siblings"]["p10"] <= 0.54
    train_q, train_rel = load_questions(run / "store" / "questions" / "train.jsonl")
    test_q, test_rel = load_questions(run / "store" / "questions" / "test.jsonl")
    assert len(train_q) == 100 and len(test_q) == 100 and not set(train_q) & set(test_q)
    db = VectorStore(run / "store", read_only=True)
    assert {cid for rel in train_rel + test_rel for cid, _ in rel} <= set(db.ids)
    assert rec["status"] == "completed" and [j["id"] for j in db.deep_memory.list_jobs()] == [
        db.deep_memory.get_model()]  # the one job 02 ran is the active model
    assert 0 <= rec["alpha"] <= 1 and rec["validation"]["n"]["new"] > 0
    assert (run / "figures" / "02_training_curve.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def notebook_03(run, notebook_02):
    return executed(run, "03_evaluation.ipynb", {
        "STORE_PATH": str(run / "store"), "FIGURE_DIR": str(run / "figures"), "TOP_K": [1, 3, 5, 10, 50]})


def test_03_records_recall_with_and_without_the_model(run, notebook_03):
    rec = notebook_03
    assert rec["n_test"] == 100 and rec["has_model"] and rec["top_k"] == [1, 3, 5, 10, 50]
    for mode in ("without_model", "with_model"):
        assert set(rec[mode]) == {f"recall@{k}" for k in (1, 3, 5, 10, 50)} | {"mrr@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in rec[mode].values())
    new = rec["by_chunk"]["new chunks"]  # the promise: at most one question about a chunk it never saw loses, at any k
    assert all(new["with model"][m] >= new["without model"][m] - 1 / new["n"] - 1e-9
               for m in new["without model"] if m.startswith("recall@"))
    seen = rec["by_chunk"]["seen chunks"]  # and the model acts: questions about chunks asked about in training gain
    assert seen["with model"]["recall@10"] > seen["without model"]["recall@10"], seen
    assert sum(row["n"] for row in rec["by_chunk"].values()) == 100
    ragas = rec["ragas"]["scores"]
    assert set(ragas) == {"non_llm_context_recall", "id_based_context_recall"}
    assert ragas["id_based_context_recall"]["with model"] == pytest.approx(rec["with_model"]["recall@10"])
    assert all(0.0 <= v <= 1.0 for row in ragas.values() for v in row.values())
    for figure in ("03_recall_at_k.png", "03_rank_change.png"):
        assert (run / "figures" / figure).stat().st_size > 10_000


def test_04_answers_with_and_without_deep_memory(run, notebook_02, notebook_03):
    rec = executed(run, "04_inference.ipynb", {"STORE_PATH": str(run / "store"), "K": 5})
    test_q, _ = load_questions(run / "store" / "questions" / "test.jsonl")
    assert rec["question"] in test_q and rec["k"] == 5 and rec["n_test"] == 100
    assert rec["answer_kind"] == "extractive"
    # the question shown first is one deep memory finds and plain search does not, when there is one
    if rec["only_deep"]:
        assert rec["example_found"] == {"plain": False, "deep": True}
    else:
        assert rec["example"] is None and rec["question"] == test_q[0]
    # the retrievers find, over the 100 test questions, what 03's recall@5 says (one relevant chunk each)
    assert rec["in_context_plain"] == round(100 * notebook_03["without_model"]["recall@5"])
    assert rec["in_context_deep"] == round(100 * notebook_03["with_model"]["recall@5"])


@pytest.fixture(scope="module")
def notebook_05(run, notebook_02):
    return executed(run, "05_cost.ipynb", {
        "STORE_PATH": str(run / "store"), "BASELINE_K": 10, "MAX_K": 12, "FIGURE_DIR": str(run / "figures")})


def test_05_finds_the_k_deep_memory_needs_and_the_tokens_saved(run, notebook_05):
    rec = notebook_05
    assert rec["encoding"] == "o200k_base" and rec["baseline_k"] == 10
    assert rec["k_deep"] is not None and rec["k_deep"] <= 10
    assert rec["tokens_saved_per_1000"] >= 0 and rec["dollars_saved_per_1000"] == pytest.approx(
        rec["tokens_saved_per_1000"] / 1e6 * rec["price_per_mtok"], rel=1e-3)  # records keep 4 significant digits
    assert rec["deep"]["recall"][rec["k_deep"] - 1] >= rec["target_recall"]
    assert (run / "figures" / "05_cost.png").stat().st_size > 10_000


def test_a_misspelled_parameter_stops_the_notebook_with_the_closest_name(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match=r"no parameter MAXPAGES \(did you mean MAX_PAGES\?\)"):
        papermill.execute_notebook(str(NOTEBOOKS / "01_dataset_creation.ipynb"), str(tmp_path / "01.ipynb"),
                                   parameters={"MAXPAGES": 5, "STORE_PATH": str(tmp_path / "store")},
                                   cwd=str(NOTEBOOKS), progress_bar=False, kernel_name=KERNEL)
    assert not (tmp_path / "store").exists()


def test_the_run_summary_reports_each_headline_next_to_its_baseline(notebook_01, notebook_02, notebook_03, notebook_05):
    records = {"01_dataset_creation": notebook_01, "02_query_synthesis_and_training": notebook_02,
               "03_evaluation": notebook_03, "05_cost": notebook_05}
    text = summarise(records, {name: 1.0 for name in records})
    r10 = notebook_03["without_model"]["recall@10"], notebook_03["with_model"]["recall@10"]
    assert f"chunks in the store:       {notebook_01['chunks']:,}" in text
    assert "questions:                 200 (100 train, 100 test)" in text
    assert f"Recall@10 on test questions: {r10[0]:.0%} without -> {r10[1]:.0%} with Deep Memory" in text
    assert f"{notebook_05['tokens_saved_per_1000']:,.0f} (deep memory at k={notebook_05['k_deep']}" in text
    assert "total 4 s" in text


class _QuestionServer(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that writes one question per chunk; it echoes the key it was sent in
    a header, as a careless proxy might."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        words = re.findall(r"[A-Za-z_]{4,}", body["messages"][-1]["content"])
        question = f"Where do the docs explain {words[-1]} and {words[len(words) // 2]}?"
        send_reply(self, 200, chat_completion(question, body["model"]),
                   headers={"X-Echo": self.headers.get("Authorization", "")})

    def log_message(self, *args) -> None:
        pass


def test_02_with_a_chat_model_writes_the_key_nowhere(run, notebook_01, tmp_path, monkeypatch):
    key = "sk-test-FAKEKEY0123456789abcdef"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuestionServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", key)  # the kernel papermill starts inherits the environment
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    store = tmp_path / "store"
    shutil.copytree(run / "store", store)
    try:
        rec = execute(NOTEBOOKS / "02_query_synthesis_and_training.ipynb", tmp_path / "02.ipynb", {
            "STORE_PATH": str(store), "N_QUESTIONS": 30, "QUESTIONS_PER_CHUNK": 1, "LLM": "fake-model", "EPOCHS": 2})
    finally:
        server.shutdown()
        server.server_close()
    assert rec["n_questions"] == 30 and (store / "questions" / "llm-cache-fake-model.jsonl").exists()
    written = [p for p in [tmp_path / "02.ipynb", *store.rglob("*")] if p.is_file()]
    assert len(written) > 10
    for path in written:
        assert key.encode() not in path.read_bytes() and b"FAKEKEY" not in path.read_bytes(), path
