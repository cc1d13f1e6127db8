"""The question cache: every question a chat model writes, kept so a rerun never pays for it twice.

Questions are keyed by model, prompt (:data:`~dmhelpers.questions.prompt.PROMPT_SHA`), chunk id, chunk text and
``nth`` (which question about the chunk), so a changed prompt or an edited chunk is asked again. Two sources are
read: the questions shipped with the package (``dmhelpers/questions/written/*.jsonl``, read-only: what the bundled
model wrote for the default corpus and the workshop preset, so ``make run`` needs no model time) and the run's own
JSON-lines file, appended as each question arrives and made durable before the next request.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from dmhelpers.questions.prompt import PROMPT_SHA
from dmhelpers.utils.errors import InputError

SHIPPED = Path(__file__).with_name("written")  # questions shipped with the package, one file per model


def text_sha(text: str) -> str:
    """Identifies a chunk's text in the cache, so an edited chunk is asked about again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _entries(path: Path) -> Iterable[dict]:
    # split on "\n" only, as entries are written: str.splitlines() would also split a question or chunk id at
    # U+2028, U+2029, U+0085 and other separators, and the torn halves would be dropped as unreadable
    for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
        if isinstance(entry, dict):
            yield entry


class QuestionCache:
    """Questions already written: the shipped ones, then an append-only JSON-lines file (``path``; None: no file)."""

    def __init__(self, path: str | Path | None, model: str, prompt: str = PROMPT_SHA,
                 shipped: Path | None = SHIPPED) -> None:
        self.path = self.check_path(path) if path is not None else None
        self.model, self.prompt = model, prompt
        self.known: dict[tuple[str, str, int], str] = {}
        self.shipped = 0  # how many known questions came with the package
        self._file = None
        for source in sorted(shipped.glob("*.jsonl")) if shipped is not None and shipped.is_dir() else ():
            self._read(source)
        self.shipped = len(self.known)
        if self.path is not None and self.path.exists():
            self._read(self.path)

    def _read(self, path: Path) -> None:
        for entry in _entries(path):
            if (entry.get("model") == self.model and entry.get("prompt") == self.prompt
                    and isinstance(entry.get("question"), str)):
                try:
                    self.known[(entry.get("chunk_id"), entry.get("text_sha"), entry.get("nth", 0))] = entry["question"]
                except TypeError:  # a damaged entry with a list for an id: asked again, like a torn line
                    continue

    @staticmethod
    def check_path(path: str | Path) -> Path:
        if Path(path).is_dir():
            raise InputError(f"cache={str(path)!r} is a folder; it must be a file path. Pass e.g. "
                             f"{str(Path(path) / 'llm-cache.jsonl')!r}.")
        return Path(path)

    def get(self, chunk_id: str, text: str, nth: int = 0) -> str | None:
        return self.known.get((chunk_id, text_sha(text), nth))

    def add(self, chunk_id: str, text: str, question: str, nth: int = 0) -> None:
        """Remember one question; with a file, append it and make it durable before the next request."""
        self.known[(chunk_id, text_sha(text), nth)] = question
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()
            if self._file.tell():
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        self._file.write(b"\n")  # end a torn last line so the new entry starts on its own
        entry = {"model": self.model, "prompt": self.prompt, "chunk_id": chunk_id, "text_sha": text_sha(text),
                 "nth": nth, "question": question}
        self._file.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
