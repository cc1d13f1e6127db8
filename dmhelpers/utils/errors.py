"""Errors that name the problem and the fix, and the one set of argument checks every function uses. All errors
derive from ``DeepMemoryError`` and a builtin type."""
from __future__ import annotations

import base64
import numbers
import os
import re
from typing import Any


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


class ChatModelError(DeepMemoryError, RuntimeError):
    """A chat model could not be started, reached or used: the local server, OpenAI or an OpenAI-compatible server."""


class QuestionGenerationError(ChatModelError):
    """The question-writing model could not be reached or configured."""


SECRET_VARIABLES = ("OPENAI_API_KEY", "MILVUS_TOKEN")  # what redact() masks in every message


def redact(text: str, *secrets: str) -> str:
    """``text`` with the values of ``OPENAI_API_KEY`` and ``MILVUS_TOKEN`` (and any of ``secrets``) masked as
    ``***``, for messages that quote a server's reply: some servers echo the key they were sent, lower- or
    upper-cased, or as the base64 of an HTTP Basic header, and an error message ends up in a notebook's outputs.
    A value that holds anything but letters (a digit, ``-``, ``:``...), as keys and tokens do, is masked in any
    case; one of letters only (up to 24), which may be an ordinary word (``Milvus`` as a password, ``EMPTY`` as a
    dummy key), only as written and as a whole word, so that "milvus" or "empty" elsewhere in the message stays
    readable. Values under 4 characters are left alone (masking them would garble the message)."""
    values = {os.environ.get(name, "") for name in SECRET_VARIABLES} | set(secrets)
    encoded = {base64.b64encode(v.strip().encode()).decode() for v in values if v.strip()}
    variants = {v.strip() for v in values} | encoded | {e.rstrip("=") for e in encoded}
    for value in sorted((v for v in variants if len(v) >= 4), key=len, reverse=True):
        if _word_like(value):
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "***", text)
        else:
            text = re.sub(re.escape(value), "***", text, flags=re.IGNORECASE)
    return text


def _word_like(value: str) -> bool:
    """Whether a secret could be an ordinary word of a message (letters only, as "Milvus" or "EMPTY"), not a key."""
    return value.isalpha() and len(value) <= 24


def require_api_key(who: str, instead: str, error: type[DeepMemoryError] = InputError) -> None:
    """Raise ``error`` unless ``OPENAI_API_KEY`` is set: ``who`` needs it, ``instead`` is the offline way."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise error(f"{who} needs OPENAI_API_KEY in the environment (and OPENAI_BASE_URL for an OpenAI-compatible "
                    f"server such as Ollama or vLLM). Set it, or {instead}.")


def check_whole(name: str, value: Any, minimum: int = 1, unit: str = "", hint: str = "",
                maximum: int | None = None) -> int:
    """``value`` as an int if it is a whole number (an int, not a bool, a float or a string) of at least
    ``minimum`` (and at most ``maximum``); otherwise an :class:`InputError` naming it, its unit and the fix."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
            maximum is not None and value > maximum):
        span = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise InputError(f"{name} must be a whole number{' of ' + unit if unit else ''} {span}, got {value!r}. "
                         f"{hint}".rstrip())
    return int(value)


def check_number(name: str, value: Any, low: float, high: float | None = None, hint: str = "") -> float:
    """``value`` as a float if it is a real number (not a bool or a string) above ``low`` (and below ``high``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > low or (
            high is not None and not value < high):
        span = f"between {low:g} and {high:g} (exclusive)" if high is not None else f"above {low:g}"
        raise InputError(f"{name} must be a number {span}, got {value!r}. {hint}".rstrip())
    return float(value)


def check_ks(name: str, value: Any, hint: str = "") -> list[int]:
    """``value`` as a sorted list of distinct whole numbers of at least 1 (e.g. the k of Recall@k)."""
    items = list(value) if isinstance(value, (list, tuple, set, range)) else []
    if not items or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in items):
        raise InputError(f"{name} must be a list of whole numbers of at least 1, got {value!r}. {hint}".rstrip())
    return sorted({int(k) for k in items})
