"""Test helpers shared by the test tiers (imported as ``helpers``; fixtures live in ``conftest.py``)."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# Six short chunks about six modules, one per line of the standard library: the small store of many tests.
TEXTS = [
    "ZipFile.read(name) returns the bytes of a member of a zip archive.",
    "csv.reader iterates over the rows of a comma-separated file.",
    "json.loads parses a JSON document from a string.",
    "datetime.timedelta represents the difference between two dates or times.",
    "re.sub replaces every match of a regular expression in a string.",
    "pathlib.Path.glob yields the files matching a pattern in a folder.",
]


class HashEmbeddings:
    """A deterministic bag-of-words embedder (hashing trick): a second, different embedder for mismatch tests."""

    def __init__(self, name: str = "test/hash-64", dimension: int = 64) -> None:
        self.name, self._dimension = name, dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts):
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self._dimension] += 1.0  # not hash(): it differs per process
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


PAGES = {
    "docs/index.html": """<html><head><title>Tiny docs</title></head><body>
        <a href="zip.html">Zip files</a> <a href="csv.html#reading">CSV</a> <a href="csv.html">CSV again</a>
        <a href="missing.html">Broken</a> <a href="slow.html">Slow</a> <a href="data.pdf">A PDF</a>
        <a href="https://elsewhere.example/page.html">Off site</a> <a href="/outside.html">Outside the prefix</a>
        <a href="mailto:docs@example.com">Mail</a> <a href="file:///etc/passwd">Local file</a>
        <a href="javascript:alert(1)">Script</a></body></html>""",
    "docs/zip.html": """<html><head><title>Zip archives</title></head><body><h1>Zip archives</h1>
        <p>Use <a href="x.html">ZipFile</a> to read a member of a zip archive: open it and call read().</p>
        <img src="logo.png" alt="logo"></body></html>""",
    "docs/csv.html": """<html><head><title>CSV files</title></head><body><h1>CSV files</h1>
        <p>The csv module reads and writes comma-separated values, one row per line.</p></body></html>""",
    "docs/data.pdf": "%PDF-1.4 not html",
    "outside.html": "<html><body>outside</body></html>",
}


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.endswith("/slow.html"):
            time.sleep(2.0)
        super().do_GET()

    def guess_type(self, path):  # the PDF must say it is a PDF
        return "application/pdf" if str(path).endswith(".pdf") else "text/html"

    def log_message(self, *args) -> None:
        pass


def send_reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: dict | bytes | str,
               content_type: str | None = None, headers: dict[str, str] | None = None) -> None:
    """Write one whole response from a test server's handler: a dict is sent as JSON, text and bytes as HTML
    unless ``content_type`` says otherwise."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    handler.send_response(status)
    handler.send_header("Content-Type", content_type or ("application/json" if isinstance(body, dict) else "text/html"))
    handler.send_header("Content-Length", str(len(raw)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(raw)


def chunk_asked_about(body: dict, corpus: dict[str, str]) -> str:
    """Which chunk of ``corpus`` a question-writing request asks about: the one holding the sentence its prompt
    shows (``Sentence: ...``, :func:`dmhelpers.questions.prompt.show`)."""
    sentence = body["messages"][-1]["content"].split("Sentence: ", 1)[1]
    return next(chunk_id for chunk_id, text in corpus.items() if sentence in text)


def chat_completion(content: str | None, model: str = "fake-model", refusal: str | None = None,
                    usage: dict[str, int] | None = None) -> dict:
    """An OpenAI-compatible ``chat.completion`` reply whose one message says ``content``."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": usage or {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class RotatedTask:
    """A corpus and questions built so that a linear map must be learned: a question's vector is its chunk's
    vector turned by a fixed rotation plus noise, so plain search mostly misses and a linear adapter can undo it.

    Texts "c<i>" embed to chunk i; questions "q<i>-<s>" embed to a noisy rotated copy of chunk i (noise seed s).
    """

    name, dimension, size = "test/rotated-32", 32, 400

    def __init__(self, turn: float = 0.75, noise: float = 0.5) -> None:
        rng = np.random.default_rng(0)
        corpus = rng.normal(size=(self.size, self.dimension))
        self.corpus = (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)).astype(np.float32)
        rotation = np.linalg.qr(rng.normal(size=(self.dimension, self.dimension)))[0]
        self.mix = ((1 - turn) * np.eye(self.dimension) + turn * rotation).astype(np.float32)
        self.noise = noise

    def embed(self, texts):
        out = []
        for t in texts:
            if t.startswith("q"):
                i, s = map(int, t[1:].split("-"))
                extra = np.random.default_rng(s * 1000 + i).normal(size=self.dimension) / np.sqrt(self.dimension)
                out.append(self.mix @ self.corpus[i] + self.noise * extra)
            else:
                out.append(self.corpus[int(t[1:])])
        out = np.array(out, dtype=np.float32).reshape(len(texts), self.dimension)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def questions(chunks, seeds) -> tuple[list[str], list[list[tuple[str, float]]]]:
        qs = [f"q{c}-{s}" for c in chunks for s in seeds]
        return qs, [[(f"c{q[1:].split('-')[0]}", 1.0)] for q in qs]


def fill_rotated(db, task: RotatedTask):
    """``db`` with the task's chunks added, with ids "c<i>"."""
    db.add_texts([f"c{i}" for i in range(task.size)], ids=[f"c{i}" for i in range(task.size)])
    return db


def build_rotated_store(path, task: RotatedTask):
    """An hnswlib store holding the task's chunks, with ids "c<i>"."""
    from dmhelpers import VectorStore

    return fill_rotated(VectorStore(path, embedding=task), task)




def folder_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its SHA-256, to prove a failed call changed nothing."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------------------------- Milvus servers
def executed(folder: Path, name: str, parameters: dict) -> dict:
    """Execute notebook ``name`` (e.g. ``"01_dataset_creation.ipynb"``) into ``folder`` through papermill and
    return what it recorded; a student would see any stderr output as a red box, so none may appear."""
    from dmhelpers.tooling.notebooks import execute, stderr_outputs

    out = folder / f"{name[:2]}.ipynb"
    records = execute(NOTEBOOKS / name, out, parameters)
    assert stderr_outputs(out) == [], f"{name} printed to stderr"
    return records


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float, proc=None) -> bool:
    """Whether 127.0.0.1:``port`` accepts connections within ``seconds`` (False at once if ``proc`` exits)."""
    import socket

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


class LiteServer:
    """A ``milvus-lite server`` on 127.0.0.1 (never 0.0.0.0), started in a process of its own and stopped by PID."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        import subprocess
        import sys

        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"
        cli = Path(sys.executable).parent / "milvus-lite"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(cli), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                                          "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        if not wait_for_port(self.port, 30, self.proc):
            self.stop()
            raise RuntimeError(f"milvus-lite server did not start: {self.log.read_text()[-2000:]}")
        self.uri = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM to its PID, then wait (SIGKILL after 10 s)."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of a real chat server: forwards each POST unchanged and records its
    body and how many requests were in flight at once (to see a client's concurrency from outside it)."""

    def __init__(self, target: str) -> None:
        self.bodies: list[dict] = []
        self.in_flight = self.peak = 0
        lock, proxy = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    proxy.bodies.append(json.loads(raw))
                    proxy.in_flight += 1
                    proxy.peak = max(proxy.peak, proxy.in_flight)
                try:
                    reply = httpx.post(target.rstrip("/") + self.path.removeprefix("/v1"), content=raw,
                                       headers={"Content-Type": "application/json"}, timeout=300, trust_env=False)
                finally:
                    with lock:
                        proxy.in_flight -= 1
                send_reply(self, reply.status_code, reply.content, "application/json")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_processes(parent: int | None = -1) -> list[int]:
    """PIDs of llama.cpp chat servers that are children of ``parent`` (default: this process; ``None``: any process).
    None should outlive a test."""
    parent = os.getpid() if parent == -1 else parent
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if (parent is None or int(fields[1]) == parent) and b"llama_cpp.server" in cmdline:
            found.append(int(stat.parent.name))
    return found
