"""Answers grounded in retrieved chunks: extractive offline, or a chat model's answer citing the chunks.

    result = answer("How do I read a zip file?", retriever)   # .text, .kind, .sources, .documents
    results = answer_all(questions, retriever, llm="gpt-4o-mini", concurrency=8)

With ``llm="local"`` the bundled SmolLM2-135M answers. It is far too small to answer from ten chunks of
documentation reliably (wrong in most tries): show its answer next to the extractive one, never alone.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from langchain_core.documents import Document

from dmhelpers.llm import DEFAULT_CONCURRENCY, Endpoint, chat_endpoint, check_concurrency, map_bounded, run_sync
from dmhelpers.rag.retriever import DeepMemoryRetriever
from dmhelpers.utils.errors import ChatModelError, InputError, check_whole, redact


@dataclass
class Answer:
    """An answer with the chunks it came from. ``kind`` is "extractive" (offline) or "generated" (a chat model,
    named by ``model``)."""

    text: str
    kind: str
    sources: list[str]
    documents: list[Document] = field(repr=False)
    prompt_tokens: int | None = None
    model: str | None = None


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n{2,}|\n(?=[-*#|])")
# Section underlines ("=====", "*****") and separators ("* * *") of rendered documentation: not sentences.
_RULE = re.compile(r"^[ \t]*(?:[=*~^#-][ \t]*){3,}$", re.M)


def _sentences(text: str) -> list[str]:
    """Sentences (and list items, table rows) of a chunk, with runs of whitespace made single spaces; headings'
    underlines dropped, and lines that only introduce what follows ("... is to insert:") left out."""
    found = (" ".join(s.split()) for s in _SENTENCE.split(_RULE.sub("\n\n", text)))
    return [s for s in found if len(s) > 20 and not s.endswith(":")]


def _closest(question: str, candidates: list[str], embedder) -> np.ndarray:
    """Cosine of each candidate sentence to the question."""
    return embedder.embed(candidates) @ embedder.embed([question])[0]


def best_sentence(question: str, text: str, embedder) -> tuple[str, float]:
    """The sentence of ``text`` closest to the question, and its cosine ("", 0.0 for a text without sentences)."""
    sentences = _sentences(text)
    if not sentences:
        return "", 0.0
    scores = _closest(question, sentences, embedder)
    return sentences[int(np.argmax(scores))], float(scores.max())


def extractive_answer(question: str, documents: list[Document], embedder, n_sentences: int = 3) -> str:
    """The ``n_sentences`` sentences of ``documents`` closest to the question (by embedding), in their order; a
    sentence that overlapping chunks repeat counts once."""
    candidates = list(dict.fromkeys(s for d in documents for s in _sentences(d.page_content)))
    if not candidates:
        return ""
    best = sorted(np.argsort(-_closest(question, candidates, embedder), kind="stable")[:n_sentences])
    return " ".join(candidates[i] for i in best)


SYSTEM_PROMPT = ("Answer the question using only the numbered context chunks. Cite the chunks you used as [1], "
                 "[2], ... If the context does not contain the answer, say so.")


def build_messages(question: str, documents: list[Document]) -> list[dict[str, str]]:
    """The chat messages a RAG answer sends: the instructions, the numbered chunks with their sources, the question."""
    context = "\n\n".join(f"[{i}] ({d.metadata.get('source', d.metadata['id'])})\n{d.page_content}"
                          for i, d in enumerate(documents, 1))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]


def answer(question: str, retriever: DeepMemoryRetriever, llm: str = "offline", n_sentences: int = 3,
           max_tokens: int | None = 512, temperature: float | None = 0.0) -> Answer:
    """Answer ``question`` from the chunks ``retriever`` returns.

    Offline (``llm="offline"``): extractive, the sentences of the retrieved chunks closest to the question,
    labelled as such. With ``"local"`` (the bundled 135M model: often wrong) or a chat model name: the model's
    answer grounded in the numbered chunks, at most ``max_tokens`` long.
    """
    if not isinstance(question, str) or not question.strip():
        raise InputError("answer() needs a non-empty question.")
    return answer_all([question], retriever, llm, n_sentences, 1, max_tokens, temperature)[0]


def answer_all(questions: Sequence[str], retriever: DeepMemoryRetriever, llm: str = "offline", n_sentences: int = 3,
               concurrency: int = DEFAULT_CONCURRENCY, max_tokens: int | None = 512,
               temperature: float | None = 0.0, timeout: float = 120.0) -> list[Answer]:
    """:func:`answer` for many questions: one batched retrieval, then up to ``concurrency`` chat requests in flight
    (answers in the order of ``questions``)."""
    if isinstance(questions, str) or not questions or any(not isinstance(q, str) or not q.strip() for q in questions):
        raise InputError("answer_all() needs a list of non-empty questions.")
    if not isinstance(retriever, DeepMemoryRetriever):
        raise InputError("answer() needs a retriever from db.as_retriever(k=..., deep_memory=...).")
    concurrency = check_concurrency(concurrency)
    if max_tokens is not None:
        check_whole("max_tokens", max_tokens, 16, "tokens", "Use e.g. max_tokens=512, or None for no cap.")
    found = retriever.batch(list(questions))
    sources = [list(dict.fromkeys(d.metadata.get("source", d.metadata["id"]) for d in docs)) for docs in found]
    if llm == "offline":
        return [Answer(extractive_answer(q, docs, retriever.store.embedding, n_sentences), "extractive", src, docs)
                for q, docs, src in zip(questions, found, sources)]
    sampling = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}
    with chat_endpoint(llm, f"LLM = {llm!r}", "use LLM = 'offline' for extractive answers") as endpoint:
        replies = run_sync(_ask_all(endpoint, [build_messages(q, d) for q, d in zip(questions, found)], sampling,
                                    concurrency, timeout))
    return [Answer(reply.choices[0].message.content or "", "generated", src, docs,
                   getattr(getattr(reply, "usage", None), "prompt_tokens", None), endpoint.model)
            for reply, docs, src in zip(replies, found, sources)]


async def _ask_all(endpoint: Endpoint, conversations: list[list[dict[str, str]]], sampling: dict, concurrency: int,
                   timeout: float) -> list:
    import openai

    async with endpoint.async_client(timeout=timeout) as client:
        async def ask(messages: list[dict[str, str]]):
            return await client.chat.completions.create(model=endpoint.model, messages=messages, **sampling)

        try:
            return await map_bounded(ask, conversations, concurrency)
        except openai.OpenAIError as exc:
            raise ChatModelError(f"The chat model {endpoint.label!r} could not answer: {redact(str(exc))}. Check the "
                                 "model name, OPENAI_API_KEY and OPENAI_BASE_URL, or use LLM = 'offline'.") from None
