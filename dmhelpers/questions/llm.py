"""Questions written by a chat model: OpenAI or any OpenAI-compatible server (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``), one per chunk, with structured JSON output. Every question is appended to a JSON-lines cache
as soon as it arrives, so a crash or a rate limit never loses questions already paid for and a rerun resumes."""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from dmhelpers.utils.errors import InputError, QuestionGenerationError, redact, require_api_key

CONTENT_RETRIES = 2  # extra LLM attempts per chunk after invalid JSON, an empty question or a refusal

SYSTEM_PROMPT = (
    "You write questions for a search benchmark over software documentation. Given one chunk of the documentation, "
    "write ONE question that a user of the documentation would ask and that this chunk answers. Ask it the way a "
    "user would, in your own words: do not copy the chunk's wording. Reply with JSON only: {\"question\": \"...\"}."
)
USER_PROMPT = "Write one question this chunk answers, as JSON {\"question\": \"...\"}."
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "question", "strict": True, "schema": {
    "type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"],
    "additionalProperties": False}}}
JSON_OBJECT = {"type": "json_object"}  # for servers without structured outputs


def _text_sha(text: str) -> str:
    """Identifies a chunk's text in the cache, so an edited chunk is asked about again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _parse_reply(content: str | None) -> tuple[str | None, str]:
    """The question in a model's JSON reply, or None and why not."""
    raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", (content or "").strip())  # some local models fence their JSON
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None, f"invalid JSON: {raw[:80]!r}"
    if not isinstance(data, dict) or not isinstance(data.get("question"), str):
        return None, f"no \"question\" string in the reply: {raw[:80]!r}"
    question = " ".join(data["question"].split())
    return (question, "") if question else (None, "empty question")


class QuestionCache:
    """An append-only JSON-lines file of questions already written, so a rerun never pays for them twice."""

    def __init__(self, path: str | Path, model: str) -> None:
        self.path, self.model = Path(path), model
        self.known: dict[tuple[str, str], str] = {}
        self._file = None
        if self.path.is_dir():
            raise InputError(f"cache={str(path)!r} is a folder; it must be a file path. Pass e.g. "
                             f"{str(self.path / 'llm-cache.jsonl')!r}.")
        if self.path.exists():
            for line in self.path.read_text("utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(entry, dict) and entry.get("model") == model and isinstance(entry.get("question"), str):
                    self.known[(entry.get("chunk_id"), entry.get("text_sha"), entry.get("nth", 0))] = entry["question"]

    def get(self, chunk_id: str, text: str, nth: int = 0) -> str | None:
        return self.known.get((chunk_id, _text_sha(text), nth))

    def add(self, chunk_id: str, text: str, question: str, nth: int = 0) -> None:
        """Append one question and make it durable before the next request."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()
            if self._file.tell():
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        self._file.write(b"\n")  # end a torn last line so the new entry starts on its own
        entry = {"model": self.model, "chunk_id": chunk_id, "text_sha": _text_sha(text), "nth": nth, "question": question}
        self._file.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.known[(chunk_id, _text_sha(text), nth)] = question

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _BadReply(Exception):
    """A reply that is not a chat completion at all; counted like an unusable answer and asked again."""


class ChatWriter:
    """Asks a chat model for one question per chunk, falling back from json_schema to json_object once."""

    def __init__(self, model: str, max_retries: int, timeout: float, cache: str | Path | None) -> None:
        require_api_key(f"LLM = {model!r}", "use LLM = 'offline' to simulate questions without a model",
                        QuestionGenerationError)
        import openai

        self.openai, self.model = openai, model
        self.client = openai.OpenAI(max_retries=max_retries, timeout=timeout)
        self.response_format: dict = JSON_SCHEMA
        self.answered = False  # a 400 before any answer means the server does not do json_schema
        self.resume = f" Questions written so far are kept in {str(cache)!r}; rerun to resume." if cache else ""

    def ask(self, text: str, avoid: Sequence[str] = ()) -> tuple[str | None, str]:
        """A question about ``text`` (unlike those in ``avoid``), or None and the reason after 1 + CONTENT_RETRIES
        unusable replies."""
        reason = ""
        for _ in range(1 + CONTENT_RETRIES):
            try:
                message = self._complete(text, avoid)
            except _BadReply as exc:
                reason = str(exc)
                continue
            if message is None:
                reason = "the reply had no choices"
            elif getattr(message, "refusal", None):
                reason = f"refused: {message.refusal}"
            else:
                question, reason = _parse_reply(message.content)
                if question:
                    return question, ""
        return None, reason

    def _complete(self, text: str, avoid: Sequence[str] = ()):
        """The model's reply message for ``text`` (None if it had no choices); fatal server errors raise."""
        others = "".join(f"\n- {q}" for q in avoid)
        ask = f"{USER_PROMPT} Ask something different from these questions:{others}" if avoid else USER_PROMPT
        user = f"Documentation chunk:\n<<<\n{text}\n>>>\n\n{ask}"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        for _ in range(2):  # a second pass only right after falling back to json_object
            try:
                response = self.client.chat.completions.create(model=self.model, messages=messages,
                                                               response_format=self.response_format)
            except self.openai.BadRequestError as exc:
                mentions = any(word in str(exc).lower() for word in ("response_format", "json_schema"))
                if self.response_format is JSON_SCHEMA and (mentions or not self.answered):
                    self.response_format = JSON_OBJECT  # for the rest of the run
                    continue
                raise QuestionGenerationError(
                    f"The server rejected a request for model {self.model!r}: {redact(str(exc))}. Check LLM (the "
                    f"model name) and OPENAI_BASE_URL.{self.resume}") from exc
            except self.openai.APIError as exc:  # what is left after the client's own retries
                raise QuestionGenerationError(
                    f"The chat server failed for model {self.model!r}: {redact(str(exc)).rstrip('.')}. Check "
                    f"OPENAI_API_KEY, OPENAI_BASE_URL and the model name, or wait out a rate limit.{self.resume}"
                ) from exc
            except ValueError as exc:  # a reply whose body is not JSON (json.JSONDecodeError): asked again
                raise _BadReply(f"the server's reply was not JSON ({exc})") from exc
            choices = getattr(response, "choices", None)
            if not isinstance(choices, list):  # e.g. an HTML page from a proxy, which the client returns as a str
                raise _BadReply(f"the server's reply was not a chat completion: {str(response)[:80]!r}")
            self.answered = True
            return choices[0].message if choices else None
        raise QuestionGenerationError(f"The server rejected json_schema and json_object output for model "
                                      f"{self.model!r}. Use a model that can reply in JSON, or LLM = 'offline'.")

