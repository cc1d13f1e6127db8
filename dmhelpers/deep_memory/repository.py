"""Where a store keeps its Deep Memory jobs and models: a small key-value interface, so Deep Memory works the same
whether models live in a folder beside an hnswlib store or in a Milvus collection beside a Milvus store.

Keys are ``<job_id>/job.json`` (the job record), ``<job_id>/adapter.safetensors`` (the trained weights) and
``ACTIVE`` (which job is the active model). A write replaces a key atomically: a reader sees the old value or the
new one, never a torn one, so an interrupted job never damages the active model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dmhelpers.utils.files import atomic_write_bytes, write_failure

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
        """Write ``key`` atomically; on an OS error (a full disk, a read-only folder) remove the folders this write
        created, so nothing half-made is left, and raise a :class:`StoreError` saying what to do."""
        path = self.folder / key
        created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as exc:
            for folder in created:  # deepest first: each is empty once the one inside it is gone
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise write_failure(exc, path, "nothing was half-written and the active model is unchanged.") from exc

    def exists(self, key: str) -> bool:
        return (self.folder / key).is_file()

    def keys(self, suffix: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*")
                      if p.is_file() and str(p).endswith(suffix))

    def discard(self, job_id: str) -> None:
        """Remove what a job wrote (used when its last record cannot be written: a full or read-only disk)."""
        folder = self.folder / job_id
        if not job_id.startswith("job-") or "/" in job_id or not folder.is_dir():
            return
        for p in folder.iterdir():
            try:
                p.unlink()
            except OSError:
                pass
        try:
            folder.rmdir()
        except OSError:
            pass
