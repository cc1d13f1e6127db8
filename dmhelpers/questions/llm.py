"""Questions written by a chat model, one per chunk, with structured JSON output: OpenAI, any OpenAI-compatible
server (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) or the bundled local model (``llm="local"``). Every question is
appended to a JSON-lines cache as soon as it arrives, so a crash or a rate limit never loses questions already paid
for and a rerun resumes.

Real servers differ in what they accept: the first request of a run settles the response format, trying
``json_schema`` (OpenAI, vLLM, Ollama), then ``json_object`` with the schema (llama.cpp's server enforces it by
grammar; it answers ``json_schema`` with HTTP 500), then plain ``json_object``. Small models need help: the prompt
carries one worked example, replies are sampled at temperature 0 with a ``max_tokens`` cap, and a reply that is
not JSON, copies the chunk, the placeholder or the example (or echoes its wording), or repeats an earlier question
about the same chunk is asked again (at a higher temperature: at 0 the same prompt gives the same reply), then
skipped.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmhelpers.questions.simulate import normalise_question
from dmhelpers.utils.errors import InputError, QuestionGenerationError, redact

CONTENT_RETRIES = 2  # extra LLM attempts per chunk after an unusable reply (invalid JSON, a copy, a refusal)
RETRY_TEMPERATURE = 0.7  # retries sample: at temperature 0 the same prompt would give the same reply again
COPIED_WORDS = 10  # a question with this many consecutive words of its chunk copies the chunk

SYSTEM_PROMPT = (
    "You write questions for a search benchmark over software documentation. Given one chunk of the documentation, "
    "write ONE question that a user of the documentation would ask and that this chunk answers. Ask it the way a "
    "user would, in your own words: do not copy the chunk's wording. Reply with JSON only: {\"question\": \"...\"}."
)
USER_PROMPT = "Write one question this chunk answers, as JSON {\"question\": \"...\"}."
# The worked example (a chunk of no corpus we ship, and its question) shown before every chunk.
EXAMPLE_CHUNK = (
    "Timeouts. A request waits for the server for as long as it takes unless you pass timeout=, the number of "
    "seconds to wait for the first byte of the response. When the time is up the call raises Timeout, so a slow "
    "server cannot hang your program. Pass a (connect, read) tuple to limit the two phases separately."
)
EXAMPLE_QUESTION = "How do I stop a request from hanging forever when the server is slow to answer?"
QUESTION_SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"],
                   "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "question", "strict": True, "schema": QUESTION_SCHEMA}}
JSON_OBJECT_SCHEMA = {"type": "json_object", "schema": QUESTION_SCHEMA}  # llama.cpp: enforced by a grammar
JSON_OBJECT = {"type": "json_object"}  # for servers with neither
FORMATS = (JSON_SCHEMA, JSON_OBJECT_SCHEMA, JSON_OBJECT)
PLACEHOLDERS = {"", "question", "your question", "your question here", "the question"}
ECHO_WORDS = 4  # a question with this many consecutive words of the example (not in its own chunk) echoes it


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


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def copied(question: str, chunk: str) -> str:
    """Why ``question`` is a copy rather than a question (the placeholder, the worked example or a run of its
    words that ``chunk`` does not have, a run of the chunk's words), or "" if it is not."""
    if " ".join(_words(question)) in PLACEHOLDERS:
        return f"copied the placeholder: {question!r}"
    if normalise_question(question) == normalise_question(EXAMPLE_QUESTION):
        return "copied the worked example's question"
    words, text = _words(question), _words(chunk)
    if _runs(words, COPIED_WORDS) & _runs(text, COPIED_WORDS):
        return f"copied the chunk: {question[:80]!r}"
    echoed = (_runs(words, ECHO_WORDS) & _EXAMPLE_RUNS) - _runs(text, ECHO_WORDS)
    if echoed:
        return f"echoed the worked example ({' '.join(min(echoed))!r}): {question[:80]!r}"
    return ""


def _runs(words: list[str], length: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + length]) for i in range(len(words) - length + 1)}


# The example's own wording, past its question's opening ("How do I stop"), which any question may share.
_EXAMPLE_RUNS = _runs(_words(EXAMPLE_QUESTION)[4:], ECHO_WORDS) | _runs(_words(EXAMPLE_CHUNK), ECHO_WORDS)


def messages_for(text: str, avoid: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat messages asking for a question about ``text``: instructions, the worked example, the chunk."""
    others = "".join(f"\n- {q}" for q in avoid)
    ask = f"{USER_PROMPT} Ask something different from these questions:{others}" if avoid else USER_PROMPT
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Documentation chunk:\n<<<\n{EXAMPLE_CHUNK}\n>>>\n\n{USER_PROMPT}"},
            {"role": "assistant", "content": json.dumps({"question": EXAMPLE_QUESTION})},
            {"role": "user", "content": f"Documentation chunk:\n<<<\n{text}\n>>>\n\n{ask}"}]


def _rejects_format(exc: Exception, response_format: dict) -> bool:
    """Whether an HTTP error rejects the response format: a 400, 422 or 500 that names it (llama.cpp's server
    answers json_schema with a 500), or any 400 to the first format tried."""
    status = getattr(exc, "status_code", None)
    names = any(word in str(exc).lower() for word in ("response_format", "json_schema", "schema"))
    return status in (400, 422, 500) and (names or (status == 400 and response_format is FORMATS[0]))


class QuestionCache:
    """An append-only JSON-lines file of questions already written, so a rerun never pays for them twice."""

    def __init__(self, path: str | Path, model: str) -> None:
        self.path, self.model = self.check_path(path), model
        self.known: dict[tuple[str, str], str] = {}
        self._file = None
        if self.path.exists():
            # split on "\n" only, as entries are written: str.splitlines() would also split a question or chunk id
            # at U+2028, U+2029, U+0085 and other separators, and the torn halves would be dropped as unreadable
            for line in self.path.read_bytes().decode("utf-8", errors="replace").split("\n"):
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(entry, dict) and entry.get("model") == model and isinstance(entry.get("question"), str):
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
    """Asks a chat model for one question per chunk through an ``openai.AsyncOpenAI`` client. The first request
    settles the response format, one format after another (:data:`FORMATS`); then any number of requests may be
    in flight (the caller bounds them)."""

    def __init__(self, client: Any, model: str, temperature: float | None = 0.0, max_tokens: int | None = 64,
                 resume: str = "") -> None:
        import openai

        self.openai, self.client, self.model = openai, client, model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.formats = list(FORMATS)
        self.settled = False  # True once the server has answered a request in the current format
        self._probe = asyncio.Lock()
        self.resume = resume

    @property
    def response_format(self) -> dict:
        return self.formats[0]

    async def ask(self, text: str, avoid: Sequence[str] = ()) -> tuple[str | None, str]:
        """A question about ``text`` (unlike those in ``avoid``), or None and the reason after 1 + CONTENT_RETRIES
        unusable replies."""
        reason = ""
        for attempt in range(1 + CONTENT_RETRIES):
            try:
                message = await self._complete(messages_for(text, avoid), self._sampling(attempt))
            except _BadReply as exc:
                reason = str(exc)
                continue
            if message is None:
                reason = "the reply had no choices"
            elif getattr(message, "refusal", None):
                reason = f"refused: {message.refusal}"
            else:
                question, reason = _parse_reply(message.content)
                reason = reason or copied(question, text)
                if not reason and normalise_question(question) in {normalise_question(q) for q in avoid}:
                    reason = f"repeated an earlier question about this chunk: {question[:80]!r}"
                if not reason:
                    return question, ""
        return None, reason

    def _sampling(self, attempt: int) -> dict[str, Any]:
        """Temperature and length for one attempt; retries sample (seeded, so a rerun asks the same)."""
        sampling: dict[str, Any] = {}
        if self.max_tokens is not None:
            sampling["max_tokens"] = self.max_tokens
        if attempt == 0 and self.temperature is not None:
            sampling["temperature"] = self.temperature
        elif attempt:
            sampling.update(temperature=max(self.temperature or 0.0, RETRY_TEMPERATURE), seed=attempt)
        return sampling

    async def _complete(self, messages: list[dict[str, str]], sampling: dict[str, Any]):
        """The model's reply message (None if it had no choices); fatal server errors raise."""
        try:
            if not self.settled:
                async with self._probe:  # one request at a time until a format is accepted
                    if not self.settled:
                        response = await self._first(messages, sampling)
                        self.settled = True
                        return _message(response)
            return _message(await self._send(self.client, messages, sampling))
        except self.openai.BadRequestError as exc:
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

    async def _first(self, messages: list[dict[str, str]], sampling: dict[str, Any]):
        """The first request of a run, falling back format by format. It is sent without the client's own
        retries, so a server that rejects a format with a 500 is not asked six more times, and retried here as
        the client would (the server's retry-after, else exponential backoff) when the error is another."""
        quick, attempt = self.client.with_options(max_retries=0), 0
        while True:
            try:
                return await self._send(quick, messages, sampling)
            except self.openai.APIStatusError as exc:
                if _rejects_format(exc, self.response_format):
                    if len(self.formats) == 1:
                        raise QuestionGenerationError(
                            f"The server rejected json_schema and json_object output for model {self.model!r}: "
                            f"{redact(str(exc))}. Use a model that can reply in JSON, or LLM = 'simulated'.") from exc
                    self.formats.pop(0)
                    continue
                if (exc.status_code < 500 and exc.status_code not in (408, 409, 429)) or attempt >= self.client.max_retries:
                    raise
                wait = _retry_after(exc.response.headers, attempt)
            except self.openai.APIConnectionError:  # also a timeout
                if attempt >= self.client.max_retries:
                    raise
                wait = _retry_after({}, attempt)
            await asyncio.sleep(wait)
            attempt += 1

    async def _send(self, client: Any, messages: list[dict[str, str]], sampling: dict[str, Any]):
        return await client.chat.completions.create(model=self.model, messages=messages,
                                                    response_format=self.response_format, **sampling)


def _retry_after(headers: Any, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` + 1, as the ``openai`` client computes it."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            wait = float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
        if 0 < wait <= 60:
            return wait
    return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


def _message(response: Any):
    """The first choice's message of a chat completion, None if it has no choices."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):  # e.g. an HTML page from a proxy, which the client returns as a str
        raise _BadReply(f"the server's reply was not a chat completion: {str(response)[:80]!r}")
    return choices[0].message if choices else None
