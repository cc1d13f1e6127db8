"""Questions written by a chat model, one per passage: OpenAI, any OpenAI-compatible server (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``) or the bundled local model (``llm="local"``).

The reply is plain text, which every chat server returns; :mod:`.prompt` builds the request and checks the reply.
Small models need help: replies are sampled at temperature 0 with a ``max_tokens`` cap, and a reply that is no
question, copies its chunk, a placeholder or a worked example, or repeats an earlier question about the same chunk
is asked again (at a higher temperature: at 0 the same prompt gives the same reply), then skipped. Every question
is cached as it arrives (:mod:`.cache`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dmhelpers.questions.passages import Passage
from dmhelpers.questions.prompt import messages_for, parse_reply, rejected
from dmhelpers.questions.simulate import normalise_question
from dmhelpers.utils.errors import QuestionGenerationError, redact

CONTENT_RETRIES = 2  # extra attempts per passage after an unusable reply (no question, a copy, a refusal)
RETRY_TEMPERATURE = 0.7  # retries sample: at temperature 0 the same prompt would give the same reply again
VARIANT_TEMPERATURE = 0.5  # another person's wording of the same need: sampled near the model's own question


class _BadReply(Exception):
    """A reply that is not a chat completion at all; counted like an unusable answer and asked again."""


class ChatWriter:
    """Asks a chat model for one question per passage through an ``openai.AsyncOpenAI`` client; any number of
    requests may be in flight (the caller bounds them)."""

    def __init__(self, client: Any, model: str, temperature: float | None = 0.0, max_tokens: int | None = 64,
                 resume: str = "") -> None:
        import openai

        self.openai, self.client, self.model = openai, client, model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.resume = resume

    async def ask(self, page: str, passage: Passage, chunk: str, avoid: Sequence[str] = (), variant: int = 0
                  ) -> tuple[str | None, str]:
        """A question about ``passage`` of ``chunk`` (unlike those in ``avoid``), or None and the reason after
        1 + CONTENT_RETRIES unusable replies. ``variant`` > 0 samples another wording of the same need (seeded)."""
        reason = ""
        for attempt in range(1 + CONTENT_RETRIES):
            try:
                message = await self._complete(messages_for(page, passage), self._sampling(attempt, variant))
            except _BadReply as exc:
                reason = str(exc)
                continue
            if message is None:
                reason = "the reply had no choices"
            elif getattr(message, "refusal", None):
                reason = f"refused: {message.refusal}"
            else:
                question, reason = parse_reply(message.content)
                reason = reason or rejected(question, chunk, passage, page)
                if not reason and normalise_question(question) in {normalise_question(q) for q in avoid}:
                    reason = f"repeated an earlier question about this chunk: {question[:80]!r}"
                if not reason:
                    return question, ""
        return None, reason

    def _sampling(self, attempt: int, variant: int = 0) -> dict[str, Any]:
        """Temperature and length for one attempt; variants and retries sample (seeded, so a rerun asks the same)."""
        sampling: dict[str, Any] = {}
        if self.max_tokens is not None:
            sampling["max_tokens"] = self.max_tokens
        if attempt == 0 and variant == 0 and self.temperature is not None:
            sampling["temperature"] = self.temperature
        elif attempt or variant:
            floor = RETRY_TEMPERATURE if attempt else VARIANT_TEMPERATURE
            sampling.update(temperature=max(self.temperature or 0.0, floor),
                            seed=variant * (1 + CONTENT_RETRIES) + attempt)
        return sampling

    async def _complete(self, messages: list[dict[str, str]], sampling: dict[str, Any]):
        """The model's reply message (None if it had no choices); fatal server errors raise."""
        try:
            response = await self.client.chat.completions.create(model=self.model, messages=messages, **sampling)
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
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):  # e.g. an HTML page from a proxy, which the client returns as a str
            raise _BadReply(f"the server's reply was not a chat completion: {str(response)[:80]!r}")
        return choices[0].message if choices else None
