"""Answers grounded in retrieved chunks: extractive offline, or a chat model's answer citing the chunks.

    result = answer("How do I read a zip file?", retriever)   # .text, .kind, .sources, .documents
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from langchain_core.documents import Document

from dmhelpers.rag.retriever import DeepMemoryRetriever
from dmhelpers.utils.errors import InputError, redact, require_api_key


@dataclass
class Answer:
    """An answer with the chunks it came from. ``kind`` is "extractive" (offline) or "generated" (a chat model)."""

    text: str
    kind: str
    sources: list[str]
    documents: list[Document] = field(repr=False)
    prompt_tokens: int | None = None


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n{2,}|\n(?=[-*#|])")


def _sentences(text: str) -> list[str]:
    """Sentences (and list items, table rows) of a chunk, with runs of whitespace made single spaces."""
    return [" ".join(s.split()) for s in _SENTENCE.split(text) if len(s.strip()) > 20]


def extractive_answer(question: str, documents: list[Document], embedder, n_sentences: int = 3) -> str:
    """The ``n_sentences`` sentences of ``documents`` closest to the question (by embedding), in their order."""
    candidates = [(d, s) for d in documents for s in _sentences(d.page_content)]
    if not candidates:
        return ""
    q = embedder.embed([question])[0]
    vectors = embedder.embed([s for _, s in candidates])
    best = sorted(np.argsort(-(vectors @ q), kind="stable")[:n_sentences])
    return " ".join(candidates[i][1] for i in best)


SYSTEM_PROMPT = ("Answer the question using only the numbered context chunks. Cite the chunks you used as [1], "
                 "[2], ... If the context does not contain the answer, say so.")


def build_messages(question: str, documents: list[Document]) -> list[dict[str, str]]:
    """The chat messages a RAG answer sends: the instructions, the numbered chunks with their sources, the question."""
    context = "\n\n".join(f"[{i}] ({d.metadata.get('source', d.metadata['id'])})\n{d.page_content}"
                          for i, d in enumerate(documents, 1))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]


def answer(question: str, retriever: DeepMemoryRetriever, llm: str = "offline", n_sentences: int = 3) -> Answer:
    """Answer ``question`` from the chunks ``retriever`` returns.

    Offline (``llm="offline"``): extractive, the sentences of the retrieved chunks closest to the question,
    labelled as such. With a chat model name: the model's answer grounded in the numbered chunks.
    """
    if not isinstance(question, str) or not question.strip():
        raise InputError("answer() needs a non-empty question.")
    if not isinstance(retriever, DeepMemoryRetriever):
        raise InputError("answer() needs a retriever from db.as_retriever(k=..., deep_memory=...).")
    documents = retriever.invoke(question)
    sources = list(dict.fromkeys(d.metadata.get("source", d.metadata["id"]) for d in documents))
    if llm == "offline":
        text = extractive_answer(question, documents, retriever.store.embedding, n_sentences)
        return Answer(text, "extractive", sources, documents)
    require_api_key(f"LLM = {llm!r}", "use LLM = 'offline' for extractive answers")
    import openai

    try:
        reply = openai.OpenAI().chat.completions.create(model=llm, messages=build_messages(question, documents))
    except openai.OpenAIError as exc:
        raise InputError(f"The chat model {llm!r} could not answer: {redact(str(exc))}. Check the model name, "
                         "OPENAI_API_KEY and OPENAI_BASE_URL, or use LLM = 'offline'.") from None
    usage = getattr(reply, "usage", None)
    return Answer(reply.choices[0].message.content or "", "generated", sources, documents,
                  getattr(usage, "prompt_tokens", None))
