"""Issue 20, the store: faults found by probing the public API, each a test that fails on the code before the fix.

- line separators other than "\\n" (U+2028, U+0085, form feeds ...) in texts and metadata, and a write that would
  not read back;
- ``overwrite=True`` and the store's cleaning leave the user's own folders alone, and ``overwrite=True`` rebuilds a
  store whose pointer or meta is damaged (as every "damaged" message advises); a meta that cannot be opened, or
  that records a large M from an earlier version, is handled by name;
- query vectors, index parameters and damaged files of the wrong shape are refused before hnswlib sees them
  (crash-prone cases run in a subprocess, so this process survives the old behaviour);
- readers opening while a writer commits in a loop never fail;
- the embedder is identified by a probe vector as well as its name (compared at first use, except for a local
  model); zero vectors are refused, others normalised, on every path (search, training, evaluation); query vectors
  are checked once per call;
- raw errors (a string for ``embedding=``, a list from ``embed()``, a full disk, a read-only folder) are named.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, TEXTS, HashEmbeddings, RotatedTask, build_rotated_store, folder_digest

from dmhelpers import InputError, StoreError, VectorStore
from dmhelpers.deep_memory.adapter import weights_from_bytes
from dmhelpers.store import hnsw_store

SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r", "\r\n"]


def backend_path(tmp_path: Path, backend: str, name: str = "store") -> Path:
    return tmp_path / (f"{name}.db" if backend == "milvus-lite" else name)


@pytest.fixture(params=["hnswlib", "milvus-lite"])
def backend(request) -> str:
    return request.param


class OtherHash(HashEmbeddings):
    """Another model under the same name and dimension as :class:`HashEmbeddings`: other hash buckets."""

    def embed(self, texts):
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.adler32(w.encode()) % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class Unnormalised(HashEmbeddings):
    def embed(self, texts):
        return 5.0 * super().embed(texts)


class ZeroFor(HashEmbeddings):
    """All zeros for a text that contains "blank"."""

    def embed(self, texts):
        out = super().embed(texts)
        out[["blank" in t for t in texts]] = 0.0
        return out


class ListEmbeddings(HashEmbeddings):
    def embed(self, texts):
        return super().embed(texts).tolist()


# ------------------------------------------------------------------------- 1: line separators in records
def test_line_separators_in_texts_and_metadata_read_back(tmp_path):
    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(["a b"])
    texts = [f"x{s}y number {n}" for n, s in enumerate(SEPARATORS)]
    metas = [{"note": f"pasted{s}from a word processor", "list": [s]} for s in SEPARATORS]
    db.add_texts(texts, metadatas=metas)
    again = VectorStore(tmp_path / "store", embedding=HashEmbeddings(), read_only=True)
    assert again.texts == ["a b"] + texts and again.metadatas == [{}] + metas


def test_a_write_that_would_not_read_back_is_refused_and_the_store_is_unchanged(tmp_path, monkeypatch):
    from dmhelpers.store import snapshots

    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    before = folder_digest(db.path)
    raw_newlines = SimpleNamespace(loads=json.loads, dumps=lambda *a, **k: json.dumps(*a, **k).replace("\\n", "\n"))
    monkeypatch.setattr(snapshots, "json", raw_newlines)  # a JSON writer that leaves real newlines in strings
    with pytest.raises(StoreError, match=r"the new snapshot would not read back \(record 7 would span two lines of "
                                         r"records.jsonl\)\. The store is unchanged: it still holds its 6 chunks"):
        db.add_texts(["line one", "line one\nline two"])
    assert folder_digest(db.path) == before and sorted(p.name for p in db.path.iterdir()) == [
        ".lock", "STORE", "v000001"]
    monkeypatch.undo()
    db.add_texts(["line one", "line one\nline two"])
    assert VectorStore(db.path, embedding=HashEmbeddings(), read_only=True).texts[-1] == "line one\nline two"


# ------------------------------------------------------------------------- 2: only the store's own files go
def test_overwrite_and_cleaning_leave_the_users_folders(tmp_path):
    path = tmp_path / "d"
    VectorStore(path, embedding=HashEmbeddings()).add_texts(TEXTS)
    (path / "v1").mkdir()
    (path / "v1" / "r.csv").write_text("x\n")
    (path / "v000099").mkdir()  # named like a snapshot, but not one: no meta.json
    (path / "v000099" / "x").write_text("mine")
    (path / "notes.txt").write_text("mine too")
    VectorStore(path, embedding=HashEmbeddings(), overwrite=True).add_texts(["a"])
    assert sorted(p.name for p in path.iterdir()) == [".lock", "STORE", "notes.txt", "v000002", "v000099", "v1"]
    assert (path / "v1" / "r.csv").read_text() == "x\n" and (path / "v000099" / "x").read_text() == "mine"

    fresh = tmp_path / "fresh"  # no store yet, overwrite=True to build beside the user's files
    (fresh / "v1").mkdir(parents=True)
    (fresh / "v1" / "r.csv").write_text("y\n")
    VectorStore(fresh, embedding=HashEmbeddings(), overwrite=True).add_texts(["a"])
    assert (fresh / "v1" / "r.csv").read_text() == "y\n"
    assert len(VectorStore(fresh, embedding=HashEmbeddings(), read_only=True)) == 1


def _drop(path: Path, key: str) -> None:
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != key}))


DAMAGES = {  # what is done to a 2-chunk store, and whether its snapshot stays recognisably the store's own
    "meta-without-index": (lambda p: _drop(p / "v000001" / "meta.json", "index"), False),
    "meta-garbage": (lambda p: (p / "v000001" / "meta.json").write_bytes(b"\x00{garbage"), False),
    "pointer-without-snapshot": (lambda p: _drop(p / "STORE", "snapshot"), True),
    "pointer-garbage": (lambda p: (p / "STORE").write_bytes(b"\x00{garbage"), True),
    "meta-is-a-folder": (lambda p: ((p / "v000001" / "meta.json").unlink(), (p / "v000001" / "meta.json").mkdir()),
                         False),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_overwrite_rebuilds_a_damaged_store(tmp_path, damage):
    path = tmp_path / "store"
    VectorStore(path, embedding=HashEmbeddings()).add_texts(TEXTS[:2])
    (path / "notes.txt").write_text("mine")
    (path / "v000005").mkdir()  # the user's, named like a snapshot: the new one is numbered above it
    (path / "v000005" / "x").write_text("mine too")
    damage_it, own = DAMAGES[damage]
    damage_it(path)
    for read_only in (True, False):  # without overwrite=True it stays refused, with the advice
        with pytest.raises(StoreError, match=r"(is damaged|unreadable STORE file).*Rebuild it .*overwrite=True"):
            VectorStore(path, embedding=HashEmbeddings(), read_only=read_only)
    db = VectorStore(path, embedding=HashEmbeddings(), overwrite=True)
    assert len(db) == 0
    db.add_texts(["a new chunk about zip archives", "another about csv rows"])
    again = VectorStore(path, embedding=HashEmbeddings(), read_only=True)
    assert again.texts == ["a new chunk about zip archives", "another about csv rows"]
    assert json.loads((path / "STORE").read_text())["snapshot"] == ("v000006" if not damage.startswith("meta")
                                                                    else "v000002")
    left = sorted(p.name for p in path.iterdir() if p.name.startswith("v"))
    assert (path / "notes.txt").read_text() == "mine" and (path / "v000005" / "x").read_text() == "mine too"
    assert ("v000001" in left) == (not own), left  # the damaged snapshot goes only if it is recognisably ours


def test_overwrite_of_a_damaged_store_needs_a_readable_pointer_or_folder_names_only(tmp_path):
    path = tmp_path / "store"
    db = VectorStore(path, embedding=HashEmbeddings())
    db.add_texts(TEXTS[:2])
    db.add_texts(TEXTS[2:4])  # v000002 is current, v000001 removed
    (path / "STORE").write_text("[]")
    fresh = VectorStore(path, embedding=HashEmbeddings(), overwrite=True)
    (path / "STORE").write_text("{}")  # still unreadable at the write: accepted, the overwrite is pending
    fresh.add_texts(["one"])
    assert json.loads((path / "STORE").read_text())["snapshot"] == "v000003"
    assert VectorStore(path, embedding=HashEmbeddings(), read_only=True).texts == ["one"]


@pytest.mark.parametrize("damage", ["meta-is-a-folder", "snapshot-is-a-file", "meta-unreadable"])
def test_a_meta_that_cannot_be_opened_is_named_damaged(tmp_path, monkeypatch, damage):
    path = tmp_path / "store"
    VectorStore(path, embedding=HashEmbeddings()).add_texts(TEXTS[:2])
    meta = path / "v000001" / "meta.json"
    if damage == "meta-is-a-folder":
        meta.unlink()
        meta.mkdir()
    elif damage == "snapshot-is-a-file":
        shutil.rmtree(path / "v000001")
        (path / "v000001").write_text("not a folder")
    else:  # root reads any file: the error a user without permission gets, raised where open() would
        real = builtins.open

        def denied(file, *args, **kwargs):
            if Path(file) == meta:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(StoreError, match=r"is damaged: meta.json in v000001 cannot be read \(\[Errno \d+\] .*\)\. "
                                         r"Rebuild it"):
        VectorStore(path, embedding=HashEmbeddings(), read_only=True)


def test_a_store_built_with_a_large_m_or_seed_still_opens_and_is_cleaned(tmp_path, monkeypatch):
    """Earlier versions accepted any M and seed (hnswlib builds with M=128): the new upper bounds apply to new
    arguments only, so such a store opens and its old snapshots are still recognised and removed."""
    path = tmp_path / "store"
    monkeypatch.setattr(hnsw_store, "index_params", lambda M, ef_construction, random_seed: {  # noqa: N803
        "M": M, "ef_construction": ef_construction, "random_seed": random_seed})  # the old, unbounded check
    VectorStore(path, embedding=HashEmbeddings(), M=128, ef_construction=200_000, random_seed=2**40).add_texts(TEXTS)
    monkeypatch.undo()
    db = VectorStore(path, embedding=HashEmbeddings())
    assert len(db) == 6 and db.params == {"M": 128, "ef_construction": 200_000, "random_seed": 2**40}
    db.add_texts(["one more chunk about csv rows"])
    assert sorted(p.name for p in path.iterdir()) == [".lock", "STORE", "v000002"]  # v000001 was recognised
    assert len(VectorStore(path, embedding=HashEmbeddings(), read_only=True)) == 7
    with pytest.raises(InputError, match=r"M must be a whole number of links per node from 2 to 100, got 128"):
        VectorStore(tmp_path / "new", embedding=HashEmbeddings(), M=128)


def test_a_snapshot_that_does_not_read_back_says_only_that(tmp_path, monkeypatch):
    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    before = folder_digest(db.path)
    real = hnsw_store.atomic_write_json

    def without_index(path, obj):  # a meta.json written other than it was meant to be
        real(path, {k: v for k, v in obj.items() if k != "index"} if Path(path).name == "meta.json" else obj)

    monkeypatch.setattr(hnsw_store, "atomic_write_json", without_index)
    with pytest.raises(StoreError, match=r"would not read back \(meta.json reads back as not valid \(no valid index "
                                         r"parameters: None\)\)\. The store is unchanged: it still holds its 6 "
                                         r"chunks\. Report this as a bug") as caught:
        db.add_texts(["more"])
    assert "damaged" not in str(caught.value) and "Rebuild" not in str(caught.value), caught.value
    assert "overwrite=True" not in str(caught.value)
    assert folder_digest(db.path) == before


# ------------------------------------------------------------------------- 3: shapes and parameters (subprocess)
CRASH_PRONE = r"""
import json, sys
import numpy as np
from helpers import HashEmbeddings  # run from the tests folder
from dmhelpers import VectorStore

class Narrow(HashEmbeddings):  # a 32-dimension embedder whose question vectors have 8 dimensions
    def embed(self, texts):
        out = super().embed(texts)
        return out[:, :8] if any(t.startswith("q ") for t in texts) else out

root = sys.argv[1]
texts = [f"chunk {i} about zip archives and csv rows {i}" for i in range(40)]

def build(name):
    db = VectorStore(f"{root}/{name}", embedding=Narrow(dimension=32))
    db.add_texts(texts, ids=[f"c{i}" for i in range(40)])
    return db

def damage_npy(name, array):
    db = build(name)
    np.save(f"{root}/{name}/v000001/embeddings.npy", array)
    return lambda: VectorStore(f"{root}/{name}", embedding=Narrow(dimension=32)).deep_memory.train(
        [f"question on zip {i}" for i in range(8)], [[(f"c{i}", 1.0)] for i in range(8)], epochs=1)

cases = {
    "search-8-of-32": lambda: build("a").search("q zip archives"),
    "knn-8-of-32": lambda: build("b").knn(np.ones((2, 8), np.float32), 3),
    "knn-1-d": lambda: build("c").knn(np.ones(32, np.float32), 3),
    "knn-nan": lambda: build("d").knn(np.full((1, 32), np.nan, np.float32), 3),
    "npy-one-column-more": lambda: damage_npy("e", np.ones((40, 33), np.float32))(),
    "npy-1-d": lambda: damage_npy("f", np.ones(40 * 32, np.float32))(),
    "npy-of-ints": lambda: damage_npy("g", np.ones((40, 32), np.int64))(),
    "M=0": lambda: VectorStore(f"{root}/h", embedding=HashEmbeddings(), M=0).add_texts(texts),
    "M=-5": lambda: VectorStore(f"{root}/i", embedding=HashEmbeddings(), M=-5).add_texts(texts),
    "M='16'": lambda: VectorStore(f"{root}/j", embedding=HashEmbeddings(), M="16").add_texts(texts),
    "M=10**6": lambda: VectorStore(f"{root}/k", embedding=HashEmbeddings(), M=10**6).add_texts(texts),
    "ef='x'": lambda: VectorStore(f"{root}/l", embedding=HashEmbeddings(), ef="x").add_texts(texts),
    "ef_construction=0": lambda: VectorStore(f"{root}/m", embedding=HashEmbeddings(), ef_construction=0
                                             ).add_texts(texts),
    "random_seed=-1": lambda: VectorStore(f"{root}/n", embedding=HashEmbeddings(), random_seed=-1).add_texts(texts),
}
for name in sys.argv[2:]:
    try:
        cases[name]()
        result = {"case": name, "error": None}
    except Exception as exc:
        result = {"case": name, "error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result), flush=True)
"""

SHAPES = {
    "search-8-of-32": ("StoreError", r"returned vectors of shape \(1, 8\), expected \(1, 32\) finite values"),
    "knn-8-of-32": ("InputError", r"Query vectors must be a 2-D array of shape \(n, 32\) .*got shape \(2, 8\)"),
    "knn-1-d": ("InputError", r"Query vectors must be a 2-D array .*got shape \(32,\).*v\[None, :\]"),
    "knn-nan": ("InputError", r"of finite numbers .*with NaN"),
    "npy-one-column-more": ("StoreError", r"is damaged: embeddings.npy in v000001 holds an array of shape \(40, 33\)"
                                          r".*not \(40, 32\) finite floats\. Rebuild it"),
    "npy-1-d": ("StoreError", r"is damaged: embeddings.npy in v000001 holds an array of shape \(1280,\)"),
    "npy-of-ints": ("StoreError", r"is damaged: embeddings.npy .* and type int64"),
    "M=0": ("InputError", r"M must be a whole number of links per node from 2 to 100, got 0\. Use e\.g\. M=16"),
    "M=-5": ("InputError", r"M must be a whole number .*got -5"),
    "M='16'": ("InputError", r"M must be a whole number .*got '16'"),
    "M=10**6": ("InputError", r"M must be a whole number .*from 2 to 100, got 1000000"),
    "ef='x'": ("InputError", r"ef must be a whole number of candidates from 1 to 100000, got 'x'\. Use e\.g\. ef=100"),
    "ef_construction=0": ("InputError", r"ef_construction must be a whole number .*got 0"),
    "random_seed=-1": ("InputError", r"random_seed must be a whole number from 0 to 4294967295, got -1"),
}


def test_wrong_shapes_and_index_parameters_are_refused_before_hnswlib_sees_them(tmp_path):
    run = subprocess.run([sys.executable, "-c", CRASH_PRONE, str(tmp_path), *SHAPES], capture_output=True, text=True,
                         cwd=REPO / "tests", timeout=300)
    results = {r["case"]: r for r in map(json.loads, run.stdout.split("\n")[:-1])}
    assert run.returncode == 0 and set(results) == set(SHAPES), (run.returncode, results.keys(), run.stderr[-2000:])
    for case, (error, message) in SHAPES.items():
        assert results[case]["error"] == error, results[case]
        assert re.search(message, results[case]["message"]), results[case]


def test_wrong_query_vectors_are_refused_on_milvus_too(tmp_path):
    db = VectorStore(tmp_path / "s.db", embedding=HashEmbeddings())
    try:
        db.add_texts(TEXTS)
        with pytest.raises(InputError, match=r"Query vectors must be a 2-D array of shape \(n, 64\).*got shape "
                                             r"\(1, 8\)"):
            db.knn(np.ones((1, 8), np.float32), 3)
        with pytest.raises(InputError, match=r"got shape \(1, 8\)"):
            db.search_vectors(np.ones((1, 8), np.float32), 3)
    finally:
        db.close()


# ------------------------------------------------------------------------- 4: readers while a writer commits
WRITER = r"""
import pathlib, sys, time
from helpers import HashEmbeddings
from dmhelpers import VectorStore
path, ready, stop = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
db = VectorStore(path, embedding=HashEmbeddings())
db.add_texts([f"first chunk {i} about zip archives {i}" for i in range(1500)])
ready.touch()
end, n = time.monotonic() + 120, 0  # until the reader has seen enough (a generous limit, for a stuck reader)
while not stop.exists() and time.monotonic() < end:
    db.add_texts([f"chunk {n} written while readers open the store {n}"])
    n += 1
print(n)
"""
SIZES_WANTED = 3  # the reader goes on until it has seen this many versions of the store (or the deadline)


def test_readers_never_fail_while_a_writer_commits(tmp_path):
    """What it requires does not depend on the machine's speed: the reader opens until it has seen
    ``SIZES_WANTED`` versions written by the writer (a few seconds on a quiet machine) or 60 s pass; it needs no
    failed open and at least two versions (so opens really overlapped commits). ``bench/bench_store_readers.py``
    is the 2-minute, 2-reader run."""
    path, ready, stop = tmp_path / "store", tmp_path / "ready", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ready), str(stop)], cwd=REPO / "tests",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        failures, opens, sizes = [], 0, set()
        deadline = time.monotonic() + 60
        while len(sizes) < SIZES_WANTED and time.monotonic() < deadline and writer.poll() is None:
            opens += 1
            try:
                sizes.add(len(VectorStore(path, embedding=HashEmbeddings(), read_only=True)))
            except StoreError as exc:
                failures.append(str(exc))
        stop.touch()
        out, err = writer.communicate(timeout=120)
    finally:
        writer.kill()
    assert writer.returncode == 0, err[-2000:]
    writes = int(out.split()[-1])
    assert not failures, f"{len(failures)} of {opens} opens failed: {failures[:2]}"
    assert len(sizes) >= 2 and writes >= 1, (opens, writes, sizes)  # they really overlapped
    assert sorted(p.name for p in path.iterdir())[:2] == [".lock", "STORE"]
    assert len([p for p in path.iterdir() if p.name.startswith("v")]) <= 2  # old snapshots do get removed


# ------------------------------------------------------------------------- 7: the embedder's identity and output
def test_another_model_under_the_same_name_is_refused(tmp_path, backend):
    path = backend_path(tmp_path, backend)
    db = VectorStore(path, embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    db.close()
    other = VectorStore(path, embedding=OtherHash())  # not a local model: compared at its first use (no paid call)
    for use in (lambda: other.search("zip archives"), lambda: other.add_texts(["more"])):
        with pytest.raises(StoreError, match=r"built with an embedder named 'test/hash-64', but .* is a different "
                                             r"model under that name: .*cosine 0\.\d+ .*rebuild it with this one "
                                             r"\(overwrite=True\)"):
            use()
    other.close()
    again = VectorStore(path, embedding=HashEmbeddings(), read_only=True)  # the same model still opens
    assert len(again) == 6
    again.close()
    if backend == "hnswlib":  # a store written before probes were recorded is checked by name, as before
        meta = path / "v000001" / "meta.json"
        meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "probe"}))
        assert len(VectorStore(path, embedding=OtherHash(), read_only=True)) == 6


def test_the_stores_own_local_model_is_checked_too(tmp_path):
    impostor = HashEmbeddings("sentence-transformers/all-MiniLM-L6-v2", 384)
    VectorStore(tmp_path / "store", embedding=impostor).add_texts(TEXTS)
    with pytest.raises(StoreError, match=r"LocalEmbeddings\('sentence-transformers/all-MiniLM-L6-v2'\) is a "
                                         r"different model under that name"):
        VectorStore(tmp_path / "store", read_only=True)  # embedding=None: the store's own, by its name


def test_the_stores_own_remote_embedder_is_checked_at_first_use(tmp_path, monkeypatch):
    VectorStore(tmp_path / "store", embedding=HashEmbeddings()).add_texts(TEXTS)
    monkeypatch.setattr(hnsw_store, "get_embedding", lambda name: OtherHash(name))  # e.g. an OpenAI model: no call
    db = VectorStore(tmp_path / "store", read_only=True)  # opening costs no embedding call ...
    for _ in range(2):  # ... the first search makes one, and is refused, every time
        with pytest.raises(StoreError, match=r"OtherHash\('test/hash-64'\) is a different model under that name"):
            db.search("zip archives")


class Counting(HashEmbeddings):
    """An embedder that counts its calls (a remote one would bill each)."""

    calls = 0

    def embed(self, texts):
        self.calls += 1
        return super().embed(texts)


def test_a_remote_embedder_passed_in_costs_no_call_to_open(tmp_path, backend):
    path = backend_path(tmp_path, backend)
    db = VectorStore(path, embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    db.close()
    counting = Counting()
    db = VectorStore(path, embedding=counting, read_only=True)
    try:
        assert counting.calls == 0  # opening made no embedding call ...
        assert db.search("read a member of a zip archive", k=1)[0].text == TEXTS[0]
        assert counting.calls == 2  # ... the first search made the probe's and the question's
        db.search("csv rows")
        assert counting.calls == 3
    finally:
        db.close()


def test_training_and_evaluation_embed_questions_through_the_stores_checks(tmp_path, monkeypatch):
    path = tmp_path / "store"
    chunks = [f"Chunk {i} explains zip archives and csv rows in case {i}." for i in range(20)]
    VectorStore(path, embedding=HashEmbeddings()).add_texts(chunks, ids=[f"c{i}" for i in range(20)])
    questions, relevance = [f"zip archives in case {i}?" for i in range(12)], [[(f"c{i}", 1.0)] for i in range(12)]
    monkeypatch.setattr(hnsw_store, "get_embedding", lambda name: OtherHash(name))  # the store's own, remote
    db = VectorStore(path)  # a probe comparison pending
    probe = r"OtherHash\('test/hash-64'\) is a different model under that name"
    with pytest.raises(StoreError, match=probe):
        db.deep_memory.evaluate(questions, relevance)
    with pytest.raises(StoreError, match=probe):
        db.deep_memory.train(questions, relevance, epochs=1)
    with pytest.raises(StoreError, match=probe):
        db.embed_queries(questions)


class ScaledRotated(RotatedTask):
    """The rotated task's embedder, returning vectors 3 times too long."""

    def embed(self, texts):
        return 3.0 * super().embed(texts)


def test_training_stores_unit_gate_references_for_an_unnormalised_embedder(tmp_path):
    db = build_rotated_store(tmp_path / "store", ScaledRotated())
    assert np.allclose(np.linalg.norm(db.embed_queries(["q1-0", "q2-0"]), axis=1), 1, atol=1e-5)
    job = db.deep_memory.train(*RotatedTask.questions(range(0, 120, 2), [0, 1]), epochs=2)
    weights = weights_from_bytes(db.models.read(f"{job}/adapter.safetensors"))
    assert "gate.references" in weights, sorted(weights)
    assert np.allclose(np.linalg.norm(weights["gate.references"], axis=1), 1, atol=1e-5)


def test_query_vectors_are_checked_once_per_call(tmp_path, monkeypatch):
    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    vectors = db.embed_queries(["zip archives", "csv rows"])
    calls, real = [], VectorStore._check_queries
    monkeypatch.setattr(VectorStore, "_check_queries", lambda self, v: calls.append(1) or real(self, v))
    for call in (lambda: db.search("zip archives"), lambda: db.search_vectors(vectors, 3),
                 lambda: db.knn(vectors, 3), lambda: db.search("zip archives", deep_memory=False)):
        calls.clear()
        call()
        assert len(calls) == 1
    for call in (db.search_vectors, db.knn):  # and each call still checks its own vectors
        with pytest.raises(InputError, match=r"got shape \(1, 8\)"):
            call(np.ones((1, 8), np.float32), 3)
        with pytest.raises(InputError, match=r"with NaN"):
            call(np.full((1, 64), np.nan, np.float32), 3)


def test_zero_vectors_are_refused_and_others_normalised(tmp_path, backend):
    db = VectorStore(backend_path(tmp_path, backend), embedding=ZeroFor())
    try:
        with pytest.raises(StoreError, match=r"returned an all-zero vector for text 1 \(1 of 3 such\).*drop or "
                                             r"reword that text"):
            db.add_texts(["zip archives", "a blank chunk", "csv rows"])
        assert len(db) == 0
        db.close()
        db = VectorStore(backend_path(tmp_path, backend), embedding=Unnormalised(name="test/hash-64"))
        db.add_texts(TEXTS)
        assert np.allclose(np.linalg.norm(db.embeddings, axis=1), 1, atol=1e-5)
        assert db.search("read a member of a zip archive", k=1)[0].score <= 1.0 + 1e-5
    finally:
        db.close()


# ------------------------------------------------------------------------- raw errors, named
def test_an_embedder_returning_lists_works_and_ragged_output_is_named(tmp_path):
    db = VectorStore(tmp_path / "store", embedding=ListEmbeddings())
    db.add_texts(TEXTS)
    assert db.search("parses a JSON document", k=1)[0].text == TEXTS[2]

    class Ragged(HashEmbeddings):
        def embed(self, texts):
            return [[0.5] * 64, [0.5] * 3] if len(texts) == 2 else super().embed(texts)

    with pytest.raises(StoreError, match=r"returned something that is not an array of numbers .*Fix its embed\(\)"):
        VectorStore(tmp_path / "ragged", embedding=Ragged()).add_texts(["a", "b"])


@pytest.mark.parametrize("embedding,match", [
    ("test/hash-64", r"embedding= takes an embedder object, got the string 'test/hash-64'\. Pass "
                     r"embedding=get_embedding\('test/hash-64'\), or e\.g\. embedding=LocalEmbeddings\(\)"),
    (object(), r"embedding= must be an embedder \(with \.name, \.dimension and \.embed\(texts\)\), got object"),
])
def test_something_else_than_an_embedder_is_named(tmp_path, backend, embedding, match):
    with pytest.raises(InputError, match=match):
        VectorStore(backend_path(tmp_path, backend), embedding=embedding)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class FullDiskFile:
    """A file open for writing on a disk that is full: every write raises ``OSError(ENOSPC)``, as the kernel's."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._file.name)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@pytest.fixture(params=["tmpfs", "patched"])
def small_disk(request, tmp_path, monkeypatch):
    """A folder and ``fill()``, a context in which its disk is full: a real 2 MB tmpfs (which fills up by itself,
    so ``fill()`` does nothing; needs root and mount) or, always, writes made to raise ENOSPC, as the read-only
    test does for a read-only file system."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if request.param == "tmpfs":
        if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)):
            pytest.skip("mounting a tmpfs needs root")
        yield disk, contextlib.nullcontext
        subprocess.run(["umount", "-l", str(disk)], check=True)
        return
    real = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        inside = isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)).is_relative_to(disk)
        return FullDiskFile(f) if inside and any(c in mode for c in "wax+") else f

    @contextlib.contextmanager
    def fill():
        with monkeypatch.context() as m:
            m.setattr(builtins, "open", full_open)
            yield

    yield disk, fill


def test_a_full_disk_is_named_as_such(small_disk):
    disk, fill = small_disk
    db = VectorStore(disk / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    before = folder_digest(db.path)
    with fill(), pytest.raises(StoreError, match=r"failed \(No space left on device: the disk is full\)\. The store is "
                                                 r"unchanged: it still holds its 6 chunks.*Free disk space"):
        db.add_texts([f"chunk {i} about heaps and queues {i}" for i in range(3000)])
    assert folder_digest(db.path) == before and len(VectorStore(db.path, embedding=HashEmbeddings())) == 6


def test_a_read_only_folder_is_named_as_such(tmp_path, monkeypatch):
    db = VectorStore(tmp_path / "store", embedding=HashEmbeddings())
    db.add_texts(TEXTS)
    before = folder_digest(db.path)
    if _mount("--bind", str(db.path), str(db.path)):
        try:
            assert _mount("-o", "remount,ro,bind", str(db.path))
            with pytest.raises(StoreError, match=r"\(Read-only file system: the store folder is on a read-only file "
                                                 r"system\)\. The store is unchanged.*read_only=True to search it"):
                db.add_texts(["more"])
        finally:
            subprocess.run(["umount", str(db.path)], check=True)
    else:  # without root: the same error, raised where the file system would
        real = os.open

        def read_only(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        with pytest.raises(StoreError, match=r"Read-only file system: the store folder is on a read-only file system"):
            db.add_texts(["more"])
        monkeypatch.undo()
    assert folder_digest(db.path) == before
