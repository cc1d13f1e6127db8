"""Safe loading, no secrets on disk, and a crawler that stays where it was sent.

- No pickles: the package's source never unpickles (checked on its syntax tree, not by grepping words), and
  everything a store folder holds is JSON, JSON lines, safetensors, a NumPy array without objects or the hnswlib
  index: each file is opened with a loader that cannot run code.
- API keys: a run with a fake key (OpenAI-compatible embeddings and chat servers on 127.0.0.1) writes the key to
  no file under the store or the question cache and prints it nowhere, not even when a server echoes it back.
- Crawler: redirects never leave the site's host and path prefix (the off-site server is never asked), escaped
  dot segments do not climb out of the prefix, other schemes are not followed, concurrency is bounded, pages past
  ``max_pages`` are never requested, an endless page is cut at ``max_bytes``, and a slow start page times out.
  (Plain host/path filtering, ``file:``/``mailto:`` links, the page and byte caps and a slow page are covered in
  ``test_crawl.py``.)
"""
from __future__ import annotations

import ast
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hnswlib
import numpy as np
import pytest
from helpers import HashEmbeddings, chat_completion, send_reply
from safetensors.numpy import load_file

import dmhelpers
from dmhelpers import (CrawlError, OpenAIEmbeddings, QuestionGenerationError, VectorStore, extract_links,
                       generate_questions, get_all_links, load_pages, save_questions, split_questions)

PACKAGE = Path(dmhelpers.__file__).parent
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


# ----------------------------------------------------------------------------------------------- no pickles
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loads(source: str) -> list[str]:
    """Places in ``source`` that could unpickle: pickle-family imports, ``torch.load`` without
    ``weights_only=True``, ``np.load``/``numpy.load`` with ``allow_pickle`` other than False, pandas'
    ``read_pickle``, ``torch.jit.load``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLING_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.endswith("read_pickle") or name.endswith("jit.load"):
                found.append(name)
            elif name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    found.append(f"{name} without weights_only=True")
            elif re.fullmatch(r"(np|numpy)\.load", name):
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(f"{name}(allow_pickle={ast.unparse(value)})")
    return found


def test_the_checker_finds_what_it_looks_for():
    source = """
import pickle
from joblib import load
import numpy as np
import torch
torch.load(f)
torch.load(f, weights_only=False)
torch.load(f, weights_only=True)
np.load(f, allow_pickle=True)
np.load(f)
np.load(f, allow_pickle=False)
pd.read_pickle(f)
"""
    assert unsafe_loads(source) == ["import pickle", "from joblib import ...", "torch.load without weights_only=True",
                                    "torch.load without weights_only=True", "np.load(allow_pickle=True)",
                                    "pd.read_pickle"]


MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_the_package_never_unpickles(module):
    assert unsafe_loads((PACKAGE / module).read_text()) == []


def test_the_package_source_is_checked_at_all():
    assert {"store/vector_store.py", "deep_memory/jobs.py", "deep_memory/adapter.py", "questions/generate.py"} <= set(MODULES)


# ----------------------------------------------------------------------------------------------- fake OpenAI servers
SECRET = "sk-test-SECRET123"
CORPUS = [f"Section {i} of the manual explains how to {verb} a {thing} with the standard library, which function to "
          f"call, which arguments it takes, what it returns and which errors it raises when something goes wrong."
          for i, (verb, thing) in enumerate((v, t) for v in ("read", "write", "copy", "check") for t in
                                            ("file", "folder", "archive", "table", "socket"))]


class FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/embeddings (bag-of-words vectors) and /v1/chat/completions (one JSON question); a wrong key gets a
    401 that echoes the key, as some servers do."""

    keys: list[str] = []

    def do_POST(self):  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        type(self).keys.append(key)
        if key != SECRET:
            status, payload = 401, {"error": {"message": f"Incorrect API key provided: {key}", "type": "auth"}}
        elif self.path.endswith("/embeddings"):
            vectors = HashEmbeddings("x", 16).embed(body["input"]).tolist()
            status, payload = 200, {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 1,
                                                                                        "total_tokens": 1},
                                    "data": [{"object": "embedding", "index": i, "embedding": v}
                                             for i, v in enumerate(vectors)]}
        else:
            prompt = body["messages"][-1]["content"]
            n = re.search(r"Section (\d+) ", prompt).group(1)
            status, payload = 200, chat_completion(f"What does section {n} say?", body["model"])
        send_reply(self, status, payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def openai_server(monkeypatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    FakeOpenAI.keys = []
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture()
def full_store(openai_server, tmp_path) -> Path:
    """A store built the way notebooks 01 and 02 build one, with OpenAI-compatible embeddings and chat model:
    two writes, questions with an LLM cache under the store, saved splits, a trained model, an evaluation."""
    path = tmp_path / "store"
    db = VectorStore(path, embedding=OpenAIEmbeddings("fake-embedder", batch_size=8))
    db.add_texts(CORPUS[:12], metadatas=[{"source": f"http://docs/{i}.html"} for i in range(12)])
    db.add_texts(CORPUS[12:], metadatas=[{"source": f"http://docs/{i}.html"} for i in range(12, 20)])
    cache = path / "questions" / "llm-cache-fake-chat.jsonl"
    questions, relevance = generate_questions(db.texts, db.ids, 20, llm="fake-chat", cache=cache, progress=False)
    (train_q, train_r), (test_q, test_r) = split_questions(questions, relevance, 0.6)
    save_questions(path / "questions" / "train.jsonl", train_q, train_r)
    save_questions(path / "questions" / "test.jsonl", test_q, test_r)
    db.deep_memory.train(train_q, train_r, epochs=2)
    db.deep_memory.evaluate(test_q, test_r)
    assert FakeOpenAI.keys and set(FakeOpenAI.keys) == {SECRET}  # the key was really used
    return path


# ----------------------------------------------------------------------------------------------- what a store holds
NAMED_FILES = {"STORE", "ACTIVE", ".lock"}  # JSON pointers, and the empty lock file
SUFFIXES = {".json", ".jsonl", ".npy", ".bin", ".safetensors"}  # index.bin is the hnswlib graph


def test_a_store_holds_only_json_safetensors_arrays_and_the_index(full_store):
    files = [p for p in full_store.rglob("*") if p.is_file()]
    kinds = {p.suffix or p.name for p in files}
    assert kinds == SUFFIXES | NAMED_FILES, sorted(map(str, files))  # only these, and the check below saw each
    for p in files:
        data = p.read_bytes()
        assert not data.startswith(b"PK\x03\x04"), p  # no zip archives (torch.save)
        assert not re.match(rb"\x80[\x02-\x05]", data), p  # no pickle stream
        if p.name == ".lock":
            assert data == b""
        elif p.suffix in (".json", "") or p.name in NAMED_FILES:
            json.loads(data)
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in data.decode().splitlines()]
        elif p.suffix == ".npy":
            array = np.load(p, allow_pickle=False)  # raises on an object array
            assert array.dtype == np.float32
        elif p.suffix == ".safetensors":
            assert all(v.dtype == np.float32 for v in load_file(str(p)).values())
        elif p.suffix == ".bin":
            meta = json.loads((p.parent / "meta.json").read_text())
            index = hnswlib.Index(space="cosine", dim=meta["dimension"])
            index.load_index(str(p))
            assert index.get_current_count() == meta["count"]


# ----------------------------------------------------------------------------------------------- API keys
def grep_tree(root: Path, needles: list[bytes]) -> list[str]:
    return [f"{p}: {n!r}" for p in root.rglob("*") if p.is_file() for n in needles if n in p.read_bytes()]


NEEDLES = [SECRET.encode(), b"SECRET123", SECRET.encode("utf-16-le")]


def test_the_api_key_is_written_nowhere(full_store, tmp_path, capfd):
    assert grep_tree(tmp_path, NEEDLES) == []  # the store, its question cache, the saved questions, the models
    out, err = capfd.readouterr()
    assert "SECRET123" not in out + err  # nothing printed (a notebook's output) shows it either


def test_a_server_that_echoes_a_wrong_key_does_not_get_it_into_messages(openai_server, tmp_path, capfd,
                                                                         monkeypatch):
    wrong = "sk-test-WRONGKEY456"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    cache = tmp_path / "questions.jsonl"
    with pytest.raises(QuestionGenerationError, match="Incorrect API key provided: \\*\\*\\*") as chat_error:
        generate_questions(CORPUS, [f"c{i}" for i in range(20)], 3, llm="fake-chat", cache=cache, max_retries=0,
                           progress=False, concurrency=1)
    with pytest.raises(dmhelpers.EmbeddingError, match="Incorrect API key provided: \\*\\*\\*") as embed_error:
        OpenAIEmbeddings("fake-embedder", max_retries=0).embed(["x"])
    assert FakeOpenAI.keys == [wrong, wrong]  # the server did get (and echo) the key
    for error in (chat_error.value, embed_error.value):
        assert "WRONGKEY456" not in str(error) and "OPENAI_API_KEY" in str(error)
    out, err = capfd.readouterr()
    assert "WRONGKEY456" not in out + err
    assert grep_tree(tmp_path, [b"WRONGKEY456"]) == []


def test_committed_notebooks_hold_no_api_key():
    key_like = re.compile(r"sk-[A-Za-z0-9_-]{12,}|OPENAI_API_KEY\s*=\s*['\"]?[^'\"\s]")
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        assert not key_like.search(nb.read_text()), nb.name


# ----------------------------------------------------------------------------------------------- crawler
class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default backlog of 5 would itself limit concurrency


class Site:
    """A docs site under /docs/ on 127.0.0.1 that logs every request and can redirect, stall or stream."""

    def __init__(self, pages: dict[str, str | tuple], delay: float = 0.0) -> None:
        self.pages, self.delay, self.requests, self.in_flight, self.most = pages, delay, [], 0, 0
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - stdlib name
                with site._lock:
                    site.requests.append(self.path)
                    site.in_flight += 1
                    site.most = max(site.most, site.in_flight)
                try:
                    self.respond(site.pages.get(self.path, ("status", 404)))
                finally:
                    with site._lock:
                        site.in_flight -= 1

            def respond(self, page):
                time.sleep(site.delay)
                if isinstance(page, tuple) and page[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", page[1])
                    self.end_headers()
                elif isinstance(page, tuple) and page[0] == "sleep":
                    time.sleep(page[1])
                    self.respond("<html><title>late</title></html>")
                elif isinstance(page, tuple) and page[0] == "endless":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    chunk = b"<p>" + b"x" * 65_000 + b"</p>"
                    deadline = time.monotonic() + 20
                    try:
                        while time.monotonic() < deadline:
                            self.wfile.write(chunk)
                            site.sent += len(chunk)
                    except OSError:
                        pass  # the crawler hung up
                elif isinstance(page, tuple):
                    self.send_error(page[1])
                else:
                    send_reply(self, 200, page)

            def log_message(self, *args):
                pass

        self.sent = 0
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sites() -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.close()


def page(title: str) -> str:
    return f"<html><head><title>{title}</title></head><body><p>{title}</p></body></html>"


def test_redirects_never_leave_the_site_or_its_path_prefix(sites):
    elsewhere = Site({"/docs/x.html": page("elsewhere")})
    site = Site({"/docs/ok.html": page("ok"),
                 "/docs/to-other-host.html": ("redirect", f"{elsewhere.base}/docs/x.html"),
                 "/docs/to-outside.html": ("redirect", "/private/secret.html"),
                 "/docs/to-file.html": ("redirect", "file:///etc/passwd"),
                 "/docs/to-sub.html": ("redirect", "/docs/sub/moved.html"),
                 "/docs/sub/moved.html": page("moved"),
                 "/private/secret.html": page("secret")})
    sites += [elsewhere, site]
    names = ["ok", "to-other-host", "to-outside", "to-file", "to-sub"]
    pages, failed = load_pages([f"{site.base}/docs/{n}.html" for n in names], progress=False)
    assert [p.title for p in pages] == ["ok", "moved"]  # a redirect within the prefix is fine
    assert {u.rsplit("/", 1)[1] for u in failed} == {"to-other-host.html", "to-outside.html", "to-file.html"}
    assert all("redirected off the site" in why for why in failed.values())
    assert elsewhere.requests == [] and "/private/secret.html" not in site.requests  # never even asked


def test_links_stay_under_the_prefix_and_on_http():
    html = """<a href="%2e%2e/secret.html">escaped dots</a> <a href="sub/%2E%2E/%2e%2e/s2.html">more</a>
              <a href="javascript:alert(1)">js</a> <a href="data:text/html,hi">data</a> <a href="vbscript:x">vb</a>
              <a href="//evil.example/docs/a.html">protocol-relative</a>
              <a href="http://site.org@evil.example/docs/a.html">userinfo</a>
              <a href="http://site.org:8080/docs/a.html">other port</a>
              <a href="sub/%2e%2e/fine.html">dots that stay inside</a> <a href="  sub/b.html ">padded</a>"""
    assert extract_links(html, "http://site.org/docs/index.html") == [
        "http://site.org/docs/sub/%2e%2e/fine.html", "http://site.org/docs/sub/b.html"]


def test_concurrency_is_bounded(sites):
    pages = {f"/docs/p{i}.html": page(f"p{i}") for i in range(16)}
    site = Site(pages, delay=0.15)
    sites.append(site)
    urls = [site.base + p for p in pages]
    loaded, _ = load_pages(urls, concurrency=3, progress=False)
    assert len(loaded) == 16 and site.most == 3  # never more than asked for, and it does use them
    site.most = 0
    load_pages(urls, progress=False)
    assert site.most == 8  # the default


def test_pages_past_max_pages_are_never_requested(sites):
    pages = {f"/docs/p{i}.html": page(f"p{i}") for i in range(10)}
    site = Site(pages)
    sites.append(site)
    loaded, _ = load_pages([site.base + p for p in pages], max_pages=4, progress=False)
    assert [p.title for p in loaded] == ["p0", "p1", "p2", "p3"]
    assert sorted(site.requests) == sorted(list(pages)[:4])


def test_an_endless_page_is_cut_at_max_bytes(sites):
    site = Site({"/docs/endless.html": ("endless",), "/docs/ok.html": page("ok")})
    sites.append(site)
    start = time.monotonic()
    loaded, failed = load_pages([f"{site.base}/docs/endless.html", f"{site.base}/docs/ok.html"],
                                max_bytes=200_000, progress=False)
    assert time.monotonic() - start < 5
    assert [p.title for p in loaded] == ["ok"] and "larger than max_bytes=200,000" in next(iter(failed.values()))


def test_a_slow_start_page_times_out(sites):
    site = Site({"/docs/index.html": ("sleep", 3.0)})
    sites.append(site)
    start = time.monotonic()
    with pytest.raises(CrawlError, match="Could not load the start page .*timed out.*Check the URL"):
        get_all_links(f"{site.base}/docs/index.html", timeout=0.3)
    assert time.monotonic() - start < 2
