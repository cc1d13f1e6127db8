"""An hnswlib store whose write fails part-way (a file-size limit, a full disk) raises a clear StoreError naming the
cause and saying the store is unchanged, leaves no unfinished snapshot behind, and still opens as it was."""
from __future__ import annotations

import errno
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, HashEmbeddings, folder_digest

from dmhelpers import StoreError, VectorStore

TEXTS = [f"chunk {i} about zip archives, csv rows and json documents number {i}" for i in range(6)]
MORE = [f"another chunk {i} about heaps, queues and hash digests, case {i}" for i in range(2000)]

UNDER_A_FILE_SIZE_LIMIT = """
import json, resource, sys
from helpers import HashEmbeddings  # run from the tests folder
from dmhelpers import VectorStore
db = VectorStore(sys.argv[1], embedding=HashEmbeddings())
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
try:
    db.add_texts(json.loads(sys.stdin.read()))
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


@pytest.fixture()
def store(tmp_path):
    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    return db


# embeddings.npy of 2,006 64-dimensional rows is 513 KB and index.bin about 0.9 MB: the first limit stops the write
# in np.save, which raises; the second in hnswlib's save_index, which does not (the file is silently cut short).
@pytest.mark.parametrize("limit", [300_000, 600_000], ids=["in-embeddings.npy", "in-index.bin"])
def test_a_file_size_limit_is_a_clear_error_and_the_store_is_unchanged(store, limit):
    before = folder_digest(store.path)
    out = subprocess.run([sys.executable, "-c", UNDER_A_FILE_SIZE_LIMIT, str(store.path), str(limit)],
                         input=json.dumps(MORE), capture_output=True, text=True, check=True, cwd=REPO / "tests").stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] == "StoreError", result
    assert "failed (File too large: a file reached the file-size limit (ulimit -f))" in result["message"]
    assert "The store is unchanged: it still holds its 6 chunks" in result["message"]
    assert folder_digest(store.path) == before
    assert not [p.name for p in store.path.iterdir() if p.name.startswith(".tmp-v")]
    again = VectorStore(store.path, embedding=HashEmbeddings())
    assert again.texts == TEXTS
    again.add_texts(MORE[:3])  # and it takes the next write
    assert len(VectorStore(store.path, embedding=HashEmbeddings(), read_only=True)) == 9


def test_a_full_disk_is_a_clear_error_and_the_store_is_unchanged(store, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = folder_digest(store.path)
    monkeypatch.setattr(np, "save", full)
    with pytest.raises(StoreError, match=r"\(No space left on device: the disk is full\)\. The store is unchanged") as e:
        store.add_texts(MORE[:10])
    assert "Free disk space" in str(e.value)
    monkeypatch.undo()
    assert folder_digest(store.path) == before and len(store) == 6
    assert not [p.name for p in store.path.iterdir() if p.name.startswith(".tmp-v")]
    store.add_texts(MORE[:10])
    assert len(VectorStore(store.path, embedding=HashEmbeddings(), read_only=True)) == 16
