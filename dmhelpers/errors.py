"""Errors that name the problem and the fix. All derive from ``DeepMemoryError`` and a builtin type."""
from __future__ import annotations


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
