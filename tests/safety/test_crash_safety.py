"""Crash safety: SIGKILL a writer in the middle of ``add_texts`` and of ``deep_memory.train``, then reopen.

The kill lands where it is meant to, not by timing luck: the child process runs with a hook at one exact point
(inside the embedder, before the snapshot folder is renamed into place, before or after the ``STORE`` or
``ACTIVE`` pointer is replaced, after an epoch of training). At that point it writes a marker file and waits;
the test sees the marker, checks the half-done state on disk, and kills the child with SIGKILL.

Children are separate processes forked from a multiprocessing fork server that has imported ``dmhelpers`` once,
so each starts in milliseconds instead of the two seconds ``import torch`` takes.

Also: two processes writing one store (one wins, the other gets a clear error, nothing is corrupted), and
readers (``read_only=True``) never write, not even a lock file.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock, Timeout

from dmhelpers import InputError, StoreError, StoreLockedError, VectorStore

FORK_SERVER = multiprocessing.get_context("forkserver")
FORK_SERVER.set_forkserver_preload(["dmhelpers", "dmhelpers.store", "torch", __name__])


class DetEmbeddings:
    """A bag-of-words embedder that is the same in every process (``hash()`` is salted per process; SHA-256 not)."""

    name, dimension = "test/det-32", 32

    def __init__(self, pause_on: str | None = None, marker: str | None = None) -> None:
        self.pause_on, self.marker = pause_on, marker

    def embed(self, texts):
        if self.pause_on and any(self.pause_on in t for t in texts):
            pause(self.marker)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = hashlib.sha256(w.encode()).digest()
                out[i, h[0] % self.dimension] += 1.0 if h[1] % 2 else -1.0
        out[:, 0] += 0.01  # no all-zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


OLD = [f"old chunk {i} about topic{i} and subject{i % 7} with words w{i} x{i}" for i in range(30)]
NEW = [f"NEW chunk {i} about theme{i} and matter{i % 5}" for i in range(5)]
LATER = ["a later chunk written after the crash"]
QUESTIONS = [f"question on topic{i % 15} subject{i % 7} w{i % 15}" for i in range(30)]
RELEVANCE = [[(f"c{i % 15}", 1.0)] for i in range(30)]


# ------------------------------------------------------------------------------------- the child process
def pause(marker: str | None, go: str | None = None) -> None:
    """Tell the test we are at the hook (marker file), then wait to be killed (or for ``go`` to exist)."""
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if go and Path(go).exists():
            return
        time.sleep(0.01)
    os._exit(99)  # nobody killed us: the test fails on the exit code


def install_hooks(point: str, marker: str, go: str | None) -> None:
    """Pause at ``point``: "<before|after>:<file name replaced by os.replace>", "rename:<folder>", "epoch:<n>"."""
    kind, _, what = point.partition(":")
    if kind in ("before", "after"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            hit = Path(dst).name == what
            if hit and kind == "before":
                pause(marker, go)
            real_replace(src, dst, *args, **kwargs)
            if hit and kind == "after":
                pause(marker, go)

        os.replace = replace
    elif kind == "rename":  # the finished snapshot folder is renamed into place
        real_rename = Path.rename

        def rename(self, target):
            if Path(target).name == what:
                pause(marker, go)
            return real_rename(self, target)

        Path.rename = rename
    elif kind == "epoch":  # after the n-th reported training step
        import dmhelpers.deep_memory.jobs as dm

        real_train = dm.train_adapter
        params = inspect.signature(real_train)

        def train_adapter(*args, **kwargs):
            bound = params.bind(*args, **kwargs)
            report, calls = bound.arguments["progress"], []

            def progress(share, row):
                report(share, row)
                calls.append(share)
                if len(calls) == int(what):
                    pause(marker, go)

            bound.arguments["progress"] = progress
            return real_train(*bound.args, **bound.kwargs)

        dm.train_adapter = train_adapter


def child_main(store: str, action: str, point: str, marker: str, go: str | None, result: str) -> None:
    """Open ``store`` and run ``action`` ("add" or "train") with a pause at ``point``; write the outcome to
    ``result`` as JSON if it gets that far."""
    install_hooks(point, marker, go)
    embedder = DetEmbeddings(pause_on=NEW[0] if point == "embed" else None, marker=marker)
    db = VectorStore(store, embedding=embedder)
    if go and point == "open":  # open first, then wait for the start signal (two writers racing)
        pause(marker, go)
    try:
        if action == "add":
            db.add_texts(NEW, metadatas=[{"n": i} for i in range(len(NEW))], ids=[f"n{i}" for i in range(len(NEW))])
            outcome = {"ok": True, "len": len(db)}
        else:
            outcome = {"ok": True, "job": db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2)}
    except StoreError as exc:
        outcome = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    Path(result).write_text(json.dumps(outcome))


class Child:
    """A writer process (forked from the fork server) and the files it reports through."""

    def __init__(self, tmp: Path, name: str, store: Path, action: str, point: str, go: Path | None = None) -> None:
        self.marker, self.result = tmp / f"{name}.at-hook", tmp / f"{name}.result"
        self.process = FORK_SERVER.Process(target=child_main, args=(str(store), action, point, str(self.marker),
                                                                    str(go) if go else None, str(self.result)))
        self.process.start()

    def wait_for_hook(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker.exists():
            assert self.process.is_alive(), f"the child ended before its hook (exit {self.process.exitcode})"
            assert time.monotonic() < deadline, "the child never reached its hook"
            time.sleep(0.01)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(30)
        assert self.process.exitcode == -signal.SIGKILL

    def outcome(self) -> dict:
        self.process.join(60)
        assert self.process.exitcode == 0, self.process.exitcode
        return json.loads(self.result.read_text())


def lock_is_held(path: Path) -> bool:
    lock = FileLock(path / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


# ------------------------------------------------------------------------------------- helpers for checks
def build(path: Path, texts=OLD) -> VectorStore:
    db = VectorStore(path, embedding=DetEmbeddings())
    db.add_texts(texts, metadatas=[{"n": i} for i in range(len(texts))], ids=[f"c{i}" for i in range(len(texts))])
    return db


def assert_holds_exactly(path: Path, texts: list[str], ids: list[str]) -> VectorStore:
    """The store opens and holds exactly these rows: ids, texts, metadata, vectors, and a working index."""
    db = VectorStore(path, embedding=DetEmbeddings())
    assert db.ids == ids and db.texts == texts
    assert [m["n"] for m in db.metadatas] == [int(i[1:]) for i in ids]
    np.testing.assert_allclose(db.embeddings, DetEmbeddings().embed(texts), rtol=1e-6)
    assert [hit[0].id for hit in db.search(texts, k=1)] == ids
    return db


def snapshot_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ------------------------------------------------------------------------------------- add_texts
OLD_IDS = [f"c{i}" for i in range(len(OLD))]
NEW_IDS = [f"n{i}" for i in range(len(NEW))]


@pytest.mark.parametrize("point,lands,committed", [
    ("embed", "embedding the new texts, before anything is written", False),
    ("rename:v000002", "the new snapshot written to .tmp-v000002, not yet renamed", False),
    ("before:STORE", "the new snapshot in place, the pointer not yet switched", False),
    ("after:STORE", "the pointer switched, the old snapshot not yet removed", True),
])
def test_sigkill_during_add_texts_leaves_the_last_completed_write(tmp_path, point, lands, committed):
    path = tmp_path / "store"
    build(path)
    child = Child(tmp_path, "writer", path, "add", point)
    child.wait_for_hook()

    # The kill lands where it should: check the half-done state on disk first.
    pointer = json.loads((path / "STORE").read_text())
    folders = snapshot_folders(path)
    if point == "embed":
        assert folders == [".lock", "STORE", "v000001"] and not lock_is_held(path)
    else:
        assert lock_is_held(path), "the writer holds the lock while it writes"
        if point.startswith("rename"):
            assert ".tmp-v000002" in folders and "v000002" not in folders
            assert NEW[0] in (path / ".tmp-v000002" / "records.jsonl").read_text()
        else:
            assert "v000002" in folders and "v000001" in folders
        assert pointer["snapshot"] == ("v000002" if committed else "v000001")
    # A reader opened during the write sees the last completed write.
    reader = VectorStore(path, embedding=DetEmbeddings(), read_only=True)
    assert reader.ids == (OLD_IDS + NEW_IDS if committed else OLD_IDS)

    child.kill()

    expected_texts, expected_ids = (OLD + NEW, OLD_IDS + NEW_IDS) if committed else (OLD, OLD_IDS)
    db = assert_holds_exactly(path, expected_texts, expected_ids)
    assert not lock_is_held(path), "a dead writer's lock must not block"
    db.add_texts(LATER, metadatas=[{"n": 99}], ids=["c99"])  # the next write works at once ...
    assert_holds_exactly(path, expected_texts + LATER, expected_ids + ["c99"])
    assert snapshot_folders(path) == [".lock", "STORE", f"v{db.version:06d}"]  # ... and clears what the crash left


@pytest.mark.parametrize("point,left", [("rename:v000001", ".tmp-v000001"), ("before:STORE", "v000001")])
def test_sigkill_during_the_very_first_write_leaves_an_empty_store(tmp_path, point, left):
    path = tmp_path / "store"
    child = Child(tmp_path, "writer", path, "add", point)
    child.wait_for_hook()
    child.kill()
    assert not (path / "STORE").exists() and {".lock", left} <= set(snapshot_folders(path))
    with pytest.raises(StoreError, match="No store at .*Build one first"):
        VectorStore(path, embedding=DetEmbeddings(), read_only=True)
    db = VectorStore(path, embedding=DetEmbeddings())  # the crash's leftovers are not "other files"
    assert len(db) == 0
    build(path)
    assert_holds_exactly(path, OLD, OLD_IDS)
    assert snapshot_folders(path) == [".lock", "STORE", "v000001"]


# ------------------------------------------------------------------------------------- deep_memory.train
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str, list[list[str]]]:
    """A store with one completed, active model (job A) and the deep-memory rankings it gives."""
    path = tmp_path_factory.mktemp("trained") / "store"
    db = build(path)
    job = db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=2)
    ranks = [[h.id for h in hits] for hits in db.search(QUESTIONS[:10], k=5, deep_memory=True)]
    return path, job, ranks


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("point,new_is_active", [
    ("epoch:1", False),  # mid-training: after the first epoch of the job
    ("before:adapter.safetensors", False),  # the weights are being written
    ("before:ACTIVE", False),  # the job is complete on disk, the active-model pointer not yet switched
    ("after:ACTIVE", True),  # the pointer switched: the new model is the last completed one
])
def test_sigkill_during_training_keeps_the_last_completed_model(tmp_path, trained, point, new_is_active):
    source, first, first_ranks = trained
    path = copy_store(source, tmp_path / "store")
    child = Child(tmp_path, "trainer", path, "train", point)
    child.wait_for_hook()
    job_files = list((path / "deep_memory").glob("job-*/job.json"))
    assert len(job_files) == 2
    new = next(f.parent.name for f in job_files if f.parent.name != first)
    child.kill()

    db = VectorStore(path, embedding=DetEmbeddings())
    assert len(db) == len(OLD) and db.ids == OLD_IDS  # training never touches the corpus
    active = db.deep_memory.get_model()
    assert active == (new if new_is_active else first)
    record = {j["id"]: j for j in db.deep_memory.list_jobs()}[new]
    if point in ("epoch:1", "before:adapter.safetensors"):
        assert record["status"] == "interrupted"  # shown as such, never as still training
        assert not (path / "deep_memory" / new / "adapter.safetensors").exists()
        with pytest.raises(InputError, match="not completed"):
            db.deep_memory.set_model(new)
    else:
        assert record["status"] == "completed"
    if not new_is_active:  # the old model still answers exactly as before the crash
        ranks = [[h.id for h in hits] for hits in db.search(QUESTIONS[:10], k=5, deep_memory=True)]
        assert ranks == first_ranks
    if point == "before:ACTIVE":  # a model completed on disk can still be chosen
        db.deep_memory.set_model(new)
        assert VectorStore(path, embedding=DetEmbeddings()).deep_memory.get_model() == new
    # Nothing is stuck: training again completes and becomes the active model.
    again = db.deep_memory.train(QUESTIONS, RELEVANCE, epochs=1)
    assert VectorStore(path, embedding=DetEmbeddings(), read_only=True).deep_memory.get_model() == again


# ------------------------------------------------------------------------------------- two writers
def test_a_second_writer_is_refused_while_the_first_writes_and_a_stale_one_after(tmp_path):
    path = tmp_path / "store"
    build(path)
    second = VectorStore(path, embedding=DetEmbeddings())  # opened before the first writer commits
    go = tmp_path / "go"
    child = Child(tmp_path, "first", path, "add", "before:STORE", go)
    child.wait_for_hook()

    with pytest.raises(StoreLockedError, match=r"is locked: another process is writing to it\. Wait for it to "
                                               r"finish, or use another STORE_PATH"):
        second.add_texts(LATER, metadatas=[{"n": 99}], ids=["c99"])
    go.write_text("")
    assert child.outcome() == {"ok": True, "len": len(OLD) + len(NEW)}

    # The second writer's view is stale now: refused rather than overwriting the first writer's rows.
    with pytest.raises(StoreError, match="changed on disk since it was opened.*Reopen it and add again"):
        second.add_texts(LATER, metadatas=[{"n": 99}], ids=["c99"])
    assert_holds_exactly(path, OLD + NEW, OLD_IDS + NEW_IDS)
    VectorStore(path, embedding=DetEmbeddings()).add_texts(LATER, metadatas=[{"n": 99}], ids=["c99"])
    assert_holds_exactly(path, OLD + NEW + LATER, OLD_IDS + NEW_IDS + ["c99"])


def test_two_processes_racing_exactly_one_write_lands(tmp_path):
    """Both open the store, then start writing at the same signal: one wins, the other gets a clear error."""
    path = tmp_path / "store"
    build(path)
    go = tmp_path / "go"
    children = [Child(tmp_path, f"writer{n}", path, "add", "open", go) for n in range(2)]
    for child in children:
        child.wait_for_hook()
    go.write_text("")
    results = [child.outcome() for child in children]
    assert sorted(r["ok"] for r in results) == [False, True], results
    loser = next(r for r in results if not r["ok"])
    assert loser["type"] in ("StoreLockedError", "StoreError")
    assert "is locked: another process is writing" in loser["message"] or \
           "changed on disk since it was opened" in loser["message"]
    assert_holds_exactly(path, OLD + NEW, OLD_IDS + NEW_IDS)
    assert snapshot_folders(path) == [".lock", "STORE", "v000002"]


# ------------------------------------------------------------------------------------- readers never write
def disk_state(path: Path) -> dict[str, tuple]:
    """Every file's and folder's bytes (files), size and modification time, and the folder itself."""
    state = {".": (path.stat().st_mtime_ns,)}
    for p in sorted(path.rglob("*")):
        st = p.stat()
        state[str(p.relative_to(path))] = (st.st_mtime_ns, st.st_size,
                                           hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    return state


def test_readers_never_write(tmp_path, trained):
    source, first, first_ranks = trained
    path = copy_store(source, tmp_path / "store")
    (path / ".lock").unlink()  # so that even creating a lock file would show
    time.sleep(0.01)  # a write now would get a visibly newer mtime
    before = disk_state(path)

    db = VectorStore(path, read_only=True, embedding=DetEmbeddings())
    assert [[h.id for h in hits] for hits in db.search(QUESTIONS[:10], k=5, deep_memory=True)] == first_ranks
    db.search("topic3", k=3)
    db.deep_memory.evaluate(QUESTIONS[:10], RELEVANCE[:10], top_k=[1, 10])
    assert db.deep_memory.get_model() == first and db.deep_memory.status(first)["status"] == "completed"
    db.deep_memory.list_jobs()
    for refused in (lambda: db.add_texts(LATER), lambda: db.add_documents([]),
                    lambda: db.deep_memory.train(QUESTIONS, RELEVANCE),
                    lambda: db.deep_memory.set_model(first)):
        with pytest.raises(StoreError, match="read_only=True.*read_only=False"):
            refused()
    assert disk_state(path) == before
