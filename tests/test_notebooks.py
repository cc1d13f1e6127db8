"""Run the notebooks with papermill on CI-sized parameters, in order, and assert on what they recorded."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NOTEBOOKS

from dmhelpers import VectorStore, load_questions
from dmhelpers.notebooks import execute

PAGES = ("abc.html", "argparse.html", "array.html", "base64.html", "bisect.html", "bz2.html")  # the first 6 links


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One folder for a small end-to-end run: store, figures and executed notebooks."""
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def notebook_01(run):
    return execute(NOTEBOOKS / "01_dataset_creation.ipynb", run / "01.ipynb", {
        "MAX_PAGES": len(PAGES), "STORE_PATH": str(run / "store"), "DOCS_CACHE": str(run / "docs"),
        "FIGURE_DIR": str(run / "figures"), "DEMO_QUESTION": "How do I encode bytes as base64 text?",
    })


@pytest.fixture(scope="module")
def notebook_02(run, notebook_01):
    return execute(NOTEBOOKS / "02_query_synthesis_and_training.ipynb", run / "02.ipynb", {
        "STORE_PATH": str(run / "store"), "N_QUESTIONS": 90, "EPOCHS": 8, "FIGURE_DIR": str(run / "figures"),
    })


def test_01_builds_a_store_that_answers_a_known_question(run, notebook_01):
    assert notebook_01["pages"] == len(PAGES) and notebook_01["failed"] == 0
    db = VectorStore(run / "store", read_only=True)
    assert notebook_01["chunks"] == len(db) > 50
    assert {m["source"].rsplit("/", 1)[-1] for m in db.metadatas} == set(PAGES)
    assert notebook_01["demo_top_source"] == "base64.html"
    assert (run / "figures" / "01_chunk_lengths.png").stat().st_size > 10_000


def test_02_writes_questions_trains_and_saves_the_split(run, notebook_02):
    rec = notebook_02
    assert rec["n_questions"] == 90 and rec["n_train"] + rec["n_test"] == 90 and rec["n_train"] == 45
    train_q, train_rel = load_questions(run / "store" / "questions" / "train.jsonl")
    test_q, test_rel = load_questions(run / "store" / "questions" / "test.jsonl")
    assert len(train_q) == 45 and len(test_q) == 45 and not set(train_q) & set(test_q)
    db = VectorStore(run / "store", read_only=True)
    assert {cid for rel in train_rel + test_rel for cid, _ in rel} <= set(db.ids)
    assert rec["status"] == "completed" and db.deep_memory.get_model() == rec["job_id"]
    assert 0 <= rec["alpha"] <= 1 and rec["validation"]["n"]["new"] > 0
    assert (run / "figures" / "02_training_curve.png").stat().st_size > 10_000
