"""The store across processes: another process reopens exactly what was written; a second writer is refused."""
from __future__ import annotations

import subprocess
import sys

from helpers import folder_digest

from dmhelpers import StoreLockedError


def test_reopen_in_another_process_restores_everything(store):
    code = f"""
from dmhelpers import VectorStore
db = VectorStore({str(store.path)!r}, read_only=True)
print(len(db), db.embedding.name, db.search("parse json text", k=1)[0].id)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["6", "sentence-transformers/all-MiniLM-L6-v2", store.ids[2]]


def test_second_writer_gets_a_clear_lock_error(store):
    from filelock import FileLock

    before = folder_digest(store.path)
    with FileLock(store.path / ".lock"):
        other = subprocess.run([sys.executable, "-c", f"""
from dmhelpers import VectorStore
try:
    VectorStore({str(store.path)!r}).add_texts(["x"])
except Exception as e:
    print(type(e).__name__, e)
"""], capture_output=True, text=True).stdout
    assert other.startswith(StoreLockedError.__name__) and "is locked" in other
    assert folder_digest(store.path) == before
