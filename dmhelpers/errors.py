"""Errors that name the problem and the fix. All derive from ``DeepMemoryError`` and a builtin type."""
from __future__ import annotations

import os


class DeepMemoryError(Exception):
    """Base class for every error ``dmhelpers`` raises on purpose."""


class CrawlError(DeepMemoryError, RuntimeError):
    """A site could not be crawled (unreachable, no links, every page failed)."""


class StoreError(DeepMemoryError, RuntimeError):
    """A store folder is missing, corrupt, locked, or was built with another embedder."""


class StoreLockedError(StoreError):
    """Another process is writing the same store."""


class InputError(DeepMemoryError, ValueError):
    """An argument has the wrong shape or value."""


class EmbeddingError(DeepMemoryError, RuntimeError):
    """An embedder could not be loaded or called."""


def redact(text: str) -> str:
    """``text`` with the value of ``OPENAI_API_KEY`` masked, for messages that quote a server's reply: some servers
    echo the key they were sent, and an error message ends up in a notebook's outputs."""
    key = os.environ.get("OPENAI_API_KEY", "")
    return text.replace(key, "***") if len(key) >= 4 else text


def require_api_key(who: str, instead: str, error: type[DeepMemoryError] = InputError) -> None:
    """Raise ``error`` unless ``OPENAI_API_KEY`` is set: ``who`` needs it, ``instead`` is the offline way."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise error(f"{who} needs OPENAI_API_KEY in the environment (and OPENAI_BASE_URL for an OpenAI-compatible "
                    f"server such as Ollama or vLLM). Set it, or {instead}.")
