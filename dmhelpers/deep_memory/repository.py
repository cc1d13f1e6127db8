"""Where a store keeps its Deep Memory jobs and models: a small key-value interface, so Deep Memory works the same
whether models live in a folder beside an hnswlib store or in a Milvus collection beside a Milvus store.

Keys are ``<job_id>/job.json`` (the job record), ``<job_id>/adapter.safetensors`` (the trained weights) and
``ACTIVE`` (which job is the active model). A write replaces a key atomically: a reader sees the old value or the
new one, never a torn one, so an interrupted job never damages the active model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dmhelpers.utils.files import atomic_write_bytes


class ModelRepository(Protocol):
    """Byte values under string keys, replaced atomically."""

    where: str  # where the models are, for messages

    def read(self, key: str) -> bytes:
        """The value of ``key``; :class:`FileNotFoundError` when there is none."""

    def write(self, key: str, data: bytes) -> None:
        """Set ``key`` to ``data``, atomically."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` has a value."""

    def keys(self, suffix: str) -> list[str]:
        """Every key that ends with ``suffix``, sorted."""


class FolderModels:
    """Models as files in a folder (``<store>/deep_memory/`` for an hnswlib store); the folder is created on the
    first write, so opening a store or refusing a job writes nothing."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.where = str(self.folder)

    def read(self, key: str) -> bytes:
        return (self.folder / key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        path = self.folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)

    def exists(self, key: str) -> bool:
        return (self.folder / key).is_file()

    def keys(self, suffix: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*")
                      if p.is_file() and str(p).endswith(suffix))
