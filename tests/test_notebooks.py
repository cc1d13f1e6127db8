"""Run the notebooks with papermill on CI-sized parameters and assert on what they recorded."""
from __future__ import annotations

from conftest import NOTEBOOKS

from dmhelpers import VectorStore
from dmhelpers.notebooks import execute


def test_01_builds_a_store_that_answers_a_known_question(tmp_path):
    store = tmp_path / "store"
    rec = execute(NOTEBOOKS / "01_dataset_creation.ipynb", tmp_path / "01.ipynb", {
        "MAX_PAGES": 6, "STORE_PATH": str(store), "DOCS_CACHE": str(tmp_path / "docs"),
        "FIGURE_DIR": str(tmp_path / "figures"), "DEMO_QUESTION": "How do I encode bytes as base64 text?",
    })
    assert rec["pages"] == 6 and rec["failed"] == 0  # abc, argparse, array, base64, bisect, bz2
    db = VectorStore(store, read_only=True)
    assert rec["chunks"] == len(db) > 50
    assert {m["source"].rsplit("/", 1)[-1] for m in db.metadatas} == {
        "abc.html", "argparse.html", "array.html", "base64.html", "bisect.html", "bz2.html"}
    assert rec["demo_top_source"] == "base64.html"
    assert (tmp_path / "figures" / "01_chunk_lengths.png").stat().st_size > 10_000
