"""Where a chat model's requests go. Every LLM call site (question writing, answers, RAGAS) asks for an
:class:`Endpoint` here and talks to it with the ``openai`` client, so OpenAI, Ollama, vLLM and the bundled local
model all take the same code path:

- ``llm="local"``: the bundled SmolLM2 on llama.cpp's server (:mod:`.local_server`), the one a ``local_llm()``
  block has open or one started for the call; the user's ``OPENAI_API_KEY`` is never sent to it.
- any other name: that model on OpenAI, or on the OpenAI-compatible server at ``OPENAI_BASE_URL``, with
  ``OPENAI_API_KEY`` (read from the environment by the ``openai`` client, never stored).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dmhelpers.llm.local_server import MODEL_NAME, local_llm, open_server
from dmhelpers.utils.errors import DeepMemoryError, InputError, require_api_key

if TYPE_CHECKING:
    import openai

LOCAL = "local"
LOCAL_KEY = "no-key"  # llama.cpp's server runs without a key; a placeholder keeps the user's real key at home


def is_local(llm: object) -> bool:
    return isinstance(llm, str) and llm.strip().lower() == LOCAL


def model_label(llm: str) -> str:
    """Who ``llm`` is, as a reader should see it: "local smollm2-135m-instruct-q4_1", or the model's name."""
    return f"local {MODEL_NAME}" if is_local(llm) else str(llm)


@dataclass(frozen=True)
class Endpoint:
    """A chat model and how to reach it; ``base_url`` and ``api_key`` of None mean the ``openai`` client's own
    environment variables (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``)."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    label: str = ""

    def async_client(self, max_retries: int = 2, timeout: float = 60.0) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` for this endpoint (create it inside the event loop that uses it)."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=max_retries,
                                  timeout=timeout)


@contextlib.contextmanager
def chat_endpoint(llm: str, who: str, instead: str,
                  error: type[DeepMemoryError] = InputError) -> Iterator[Endpoint]:
    """The endpoint for ``llm`` while the block runs. For ``"local"`` that is the open ``local_llm()`` server or
    one started (and stopped) here; otherwise ``OPENAI_API_KEY`` must be set, or ``error`` says that ``who`` needs
    it and ``instead`` names the offline way."""
    if not is_local(llm):
        require_api_key(who, instead, error)
        yield Endpoint(llm, label=llm)
        return
    running = open_server()
    with contextlib.nullcontext(running) if running else local_llm() as server:
        yield Endpoint(server.model, server.base_url, LOCAL_KEY, label=f"local {server.model}")
