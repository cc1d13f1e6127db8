"""01 -> 04 on the real parts a user swaps in, together: a Milvus Lite store (``STORE_PATH = "....db"``) and the
bundled chat model on llama.cpp's server (``LLM = "local"``), at a small size. The notebooks run unchanged; no
chat server outlives the run. (05 only searches and counts tokens, through the same store API: docs/milvus.md
records a full 01 -> 05 default run on Milvus Lite and on a Milvus server.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import executed, server_processes

from dmhelpers import VectorStore, load_questions
from dmhelpers.llm import MODEL_NAME
from dmhelpers.questions.cache import SHIPPED

N_QUESTIONS = 20  # 10 training questions: the fewest a job accepts


@pytest.fixture(scope="module")
def run(tmp_path_factory, python_docs) -> dict:
    """Run 01 -> 04; return each notebook's records, the store path and the chat servers seen before and after."""
    folder = tmp_path_factory.mktemp("milvus-local")
    store = str(folder / "store.db")
    before = set(server_processes(None))
    plan = [
        ("01_dataset_creation", {"PRESET": "workshop", "MAX_PAGES": 4, "STORE_PATH": store,
                                 "DOCS_CACHE": str(python_docs)}),
        ("02_query_synthesis_and_training", {"STORE_PATH": store, "LLM": "local", "N_QUESTIONS": N_QUESTIONS,
                                             "QUESTIONS_PER_CHUNK": 1, "EPOCHS": 3}),
        ("03_evaluation", {"STORE_PATH": store, "LLM": "local", "TOP_K": [1, 3, 5, 10], "RAGAS_K": 5}),
        ("04_inference", {"STORE_PATH": store, "LLM": "local", "K": 3}),
    ]
    records = {}
    for name, parameters in plan:
        records[name[:2]] = executed(folder, f"{name}.ipynb", parameters)
    return {"records": records, "store": store, "before": before, "after": set(server_processes(None))}


def test_01_builds_a_milvus_lite_store(run):
    db = VectorStore(run["store"], read_only=True)
    try:
        assert db.backend == "milvus" and Path(run["store"]).exists()
        assert run["records"]["01"]["pages"] == 4 and run["records"]["01"]["chunks"] == len(db) > 20
    finally:
        db.close()


def test_02_writes_its_questions_with_the_local_model_and_trains_on_milvus(run):
    rec = run["records"]["02"]
    assert rec["n_questions"] == N_QUESTIONS and rec["status"] == "completed"
    db = VectorStore(run["store"], read_only=True)
    try:
        cache = db.folder / "questions" / "llm-cache-local.jsonl"
        train_q, train_rel = load_questions(db.folder / "questions" / "train.jsonl")
        test_q, _ = load_questions(db.folder / "questions" / "test.jsonl")
        # each question read from the shipped ones or written through the real server now (most of them: this
        # store's sample is not the workshop run's)
        written = [json.loads(line) for line in cache.read_text().splitlines()]
        shipped = {json.loads(line)["question"] for f in SHIPPED.glob("*.jsonl") for line in f.read_text().splitlines()}
        assert len(written) >= N_QUESTIONS // 2 and all(e["model"] == MODEL_NAME for e in written)
        assert set(train_q + test_q) <= {e["question"] for e in written} | shipped
        assert len(train_q) + len(test_q) == N_QUESTIONS and not set(train_q) & set(test_q)
        assert {cid for rel in train_rel for cid, _ in rel} <= set(db.ids)
        assert db.deep_memory.get_model() is not None  # the model lives in Milvus, beside the chunks
    finally:
        db.close()


def test_03_keeps_ragas_non_llm_metrics_for_the_local_model_and_new_chunks_lose_at_most_one(run):
    rec = run["records"]["03"]
    assert set(rec["ragas"]["scores"]) == {"non_llm_context_recall", "id_based_context_recall"}
    new = rec["by_chunk"]["new chunks"]  # at most one new-chunk question loses, at any k
    assert all(new["with model"][m] >= new["without model"][m] - 1 / new["n"] - 1e-9
               for m in new["without model"] if m.startswith("recall@"))


def test_04_answers_with_the_local_model(run):
    assert run["records"]["04"]["answer_kind"] == "generated" and run["records"]["04"]["k"] == 3
    assert run["records"]["04"]["n_test"] == N_QUESTIONS // 2


def test_no_chat_server_outlives_the_notebooks(run):
    assert run["after"] <= run["before"]
