"""Training questions for Deep Memory: questions about sampled chunks, each labelled with its chunk.

``generate_questions(texts, ids, n)`` returns the tutorial's ``(questions, relevance)`` pair, where
``relevance[i] == [(chunk_id, 1.0)]`` names the chunk question ``i`` was written about. Two writers share the same
seeded chunk sampling, de-duplication and output format: ``llm="simulated"`` (the function's default, needing
nothing) simulates questions with no model and no key (:mod:`.simulate`); ``llm="local"`` (the bundled SmolLM2 on
llama.cpp's server, notebook 02's default) or ``llm="<chat model>"`` asks a chat model about one passage of a
chunk at a time (:mod:`.passages`, :mod:`.prompt`, :mod:`.llm`), with up to ``concurrency`` requests in flight,
reading the question cache first (:mod:`.cache`: the shipped questions, then the run's file).
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import warnings
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from dmhelpers.deep_memory.config import MIN_TRAINING_QUESTIONS
from dmhelpers.llm import (DEFAULT_CONCURRENCY, MODEL_NAME, chat_endpoint, check_concurrency, is_local, model_label,
                           run_sync)
from dmhelpers.questions.cache import QuestionCache
from dmhelpers.questions.llm import ChatWriter
from dmhelpers.questions.passages import passages, plan
from dmhelpers.questions.prompt import page_name
from dmhelpers.questions.simulate import MIN_PROSE_WORDS, Collection, normalise_question, offline_question, usable
from dmhelpers.utils.errors import InputError, QuestionGenerationError, check_whole
from dmhelpers.utils.progress import progress_bar

SIMULATED = "simulated"  # the simulator (no model, no key); "offline" is its earlier name


def _check_inputs(texts: Sequence[str], ids: Sequence[str], n: int, llm: str) -> tuple[list[str], list[str]]:
    """Validate the arguments, naming the problem and the fix."""
    if not isinstance(llm, str) or not llm.strip():
        raise InputError(f"llm must be 'offline', 'local' or a chat model name such as 'gpt-4o-mini', got {llm!r}. "
                         "Use LLM = 'simulated' to simulate questions without a model.")
    if isinstance(texts, str) or isinstance(ids, str) or texts is None or ids is None:
        raise InputError(f"texts and ids must be lists (one entry per chunk), got {type(texts).__name__} and "
                         f"{type(ids).__name__}. Pass the store's db.texts and db.ids.")
    texts, ids = list(texts), list(ids)
    if len(texts) != len(ids):
        raise InputError(f"texts and ids must have the same length, got {len(texts)} texts and {len(ids)} ids. "
                         "Pass db.texts and db.ids of the same store.")
    if not texts:
        raise InputError("texts is empty: there are no chunks to write questions about. Build the store first "
                         "(notebook 01) and pass its db.texts and db.ids.")
    check_whole("n", n, 1, "questions", "Use e.g. N_QUESTIONS = 200.")
    bad = next((i for i, (t, c) in enumerate(zip(texts, ids)) if not isinstance(t, str) or not isinstance(c, str)),
               None)
    if bad is not None:
        raise InputError(f"texts and ids must be strings; entry {bad} is ({type(texts[bad]).__name__}, "
                         f"{type(ids[bad]).__name__}). Pass the store's db.texts and db.ids.")
    counts = Counter(ids)
    dup = next((c for c, k in counts.items() if k > 1), None)
    if dup is not None:
        raise InputError(f"ids must be unique, but {dup!r} appears {counts[dup]} times, so a question could not "
                         "name its chunk. Pass the store's db.ids, which are unique.")
    return texts, ids


def _collect(order: list[int], n: int, per_chunk: int, ids: list[str],
             write: Callable[[int, int, list[str]], str | None],
             on_question: Callable[[], object]) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Walk the sampled chunks, keeping up to ``per_chunk`` new (non-duplicate) questions each, until there are ``n``."""
    questions: list[str] = []
    relevance: list[list[tuple[str, float]]] = []
    seen: set[str] = set()
    for i in order:
        mine: list[str] = []
        for nth in range(per_chunk):
            if len(questions) == n:
                return questions, relevance
            question = write(i, nth, mine)
            if question is None or normalise_question(question) in seen:
                continue
            seen.add(normalise_question(question))
            mine.append(question)
            questions.append(question)
            relevance.append([(ids[i], 1.0)])
            on_question()
    return questions, relevance


async def _collect_concurrently(order: list[int], n: int, per_chunk: int, ids: list[str],
                                write_chunk: Callable[[int], Awaitable[list[str]]], window: int,
                                on_question: Callable[[], object]) -> tuple[list[str], list[int]]:
    """:func:`_collect` with up to ``window`` chunks being written at once. Chunks start in sample order, only as
    many as the questions still missing need, and their questions are taken in sample order, so the result does
    not depend on ``window`` or on which reply arrives first. Returns the questions and each one's chunk index."""
    questions: list[str] = []
    chunks: list[int] = []
    seen: set[str] = set()
    pending: deque[tuple[int, asyncio.Task]] = deque()
    started = promised = 0
    try:
        while len(questions) < n:
            while started < len(order) and len(pending) < window and promised < n - len(questions):
                pending.append((order[started], asyncio.create_task(write_chunk(order[started]))))
                started, promised = started + 1, promised + per_chunk
            if not pending:
                break
            i, task = pending.popleft()
            promised -= per_chunk
            for question in await task:
                key = normalise_question(question)
                if len(questions) < n and key not in seen:
                    seen.add(key)
                    questions.append(question)
                    chunks.append(i)
                    on_question()
    finally:  # done, or a fatal error: chunks started but not needed are cancelled (what arrived is cached)
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
    return questions, chunks


class _Writer:
    """The chat model, reached only on the first cache miss: a run whose questions are all cached (the shipped ones,
    or an earlier run's) starts no server and needs no key."""

    def __init__(self, llm: str, settings: dict, resume: str) -> None:
        self.llm, self.settings, self.resume = llm, settings, resume
        self.stack = contextlib.ExitStack()
        self.lock = asyncio.Lock()
        self.client = self.writer = None

    async def get(self) -> ChatWriter:
        async with self.lock:
            if self.writer is None:
                endpoint = self.stack.enter_context(chat_endpoint(
                    self.llm, f"LLM = {self.llm!r}", "use LLM = 'simulated' to simulate questions without a model",
                    QuestionGenerationError))
                self.client = endpoint.async_client(self.settings["max_retries"], self.settings["timeout"])
                self.writer = ChatWriter(self.client, endpoint.model, self.settings["temperature"],
                                         self.settings["max_tokens"], self.resume)
            return self.writer

    async def close(self) -> None:
        try:
            if self.client is not None:
                await self.client.close()
        finally:
            self.stack.close()


async def _ask_model(llm: str, texts: list[str], titles: list[str], ids: list[str], chunk_passages: dict,
                     order: list[int], n: int, per_chunk: int, store: QuestionCache, resume: str, settings: dict,
                     progress: bool) -> tuple[list[str], list[int], int]:
    """The chat model's questions for :func:`generate_questions`: question ``nth`` about a chunk asks what
    :func:`~.passages.plan` says, read from the cache or written by the model (at most
    ``settings["concurrency"]`` requests in flight) and cached as it arrives. Returns the questions, each one's
    chunk index and how many were written now."""
    failures: dict[int, str] = {}
    consumed: list[int] = []
    fresh: set[tuple[int, str]] = set()  # (chunk, question) written now, not read from the cache
    bar = progress_bar(total=n, desc=f"Questions ({model_label(llm)})", disable=not progress)
    model = _Writer(llm, settings, resume)
    try:
        in_flight = asyncio.Semaphore(settings["concurrency"])

        async def write_chunk(i: int) -> list[str]:
            mine: list[str] = []
            for nth, (passage, variant) in enumerate(chunk_passages[i]):
                question = store.get(ids[i], texts[i], nth)
                if question is None:
                    async with in_flight:
                        writer = await model.get()
                        question, reason = await writer.ask(titles[i], passage, texts[i], mine, variant)
                    if question is None:
                        failures.setdefault(i, reason)
                        continue
                    store.add(ids[i], texts[i], question, nth)
                    fresh.add((i, question))
                if normalise_question(question) not in {normalise_question(q) for q in mine}:
                    mine.append(question)
            if mine:
                failures.pop(i, None)  # reported only when a chunk got no question at all
            consumed.append(i)
            return mine

        questions, chunks = await _collect_concurrently(order, n, per_chunk, ids, write_chunk,
                                                        settings["concurrency"], bar.update)
        return questions, chunks, sum((i, q) in fresh for q, i in zip(questions, chunks))
    finally:  # also when the server fails for good: stop it, close the cache and report what was skipped
        bar.close()
        try:
            await model.close()
        finally:
            store.close()
        skipped = [i for i in order if i in failures and i in consumed]
        if skipped:
            tqdm.write(f"Skipped {len(skipped)} chunk(s) the model gave no usable question for:")
            for i in skipped:
                tqdm.write(f"  {ids[i]}: {failures[i]}")


def _check_sampling(temperature: float | None, max_tokens: int | None) -> None:
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise InputError(f"temperature must be a number from 0 to 2 or None (the server's default), got "
                         f"{temperature!r}. Use temperature=0 for reproducible questions.")
    if max_tokens is not None:
        check_whole("max_tokens", max_tokens, 16, "tokens", "Use e.g. max_tokens=64, or None for no cap.")


def generate_questions(texts: Sequence[str], ids: Sequence[str], n: int, llm: str = SIMULATED, seed: int = 0,
                       per_chunk: int = 1, cache: str | Path | None = None, max_retries: int = 6,
                       timeout: float = 60.0, progress: bool = True, concurrency: int = DEFAULT_CONCURRENCY,
                       temperature: float | None = 0.0, max_tokens: int | None = 64,
                       titles: Sequence[str] | None = None) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Write ``n`` questions, each about one chunk, as Deep Memory training data.

    Chunks are sampled with ``random.Random(seed)`` among those with at least ``MIN_PROSE_WORDS`` words of prose;
    duplicate questions (ignoring case and spacing) are dropped and further sampled chunks used instead. If the
    chunks run out first, the questions found are returned with a warning.

    Args:
        texts, ids: the chunks and their ids, e.g. ``db.texts`` and ``db.ids`` of a :class:`~dmhelpers.VectorStore`.
        n: how many questions.
        llm: ``"simulated"`` (simulated questions, no model, no key; ``"offline"`` is its earlier name), ``"local"`` (the bundled SmolLM2-135M on
            llama.cpp's server, started for the call unless a ``local_llm()`` block is open; no key), or a chat
            model name for OpenAI or an OpenAI-compatible server (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
        seed: chooses the chunks (and the offline wording); the same seed gives the same questions.
        per_chunk: questions about each sampled chunk (real users ask about some chunks again and again; the
            tutorial writes one).
        cache: JSON-lines file of LLM questions, appended as they arrive and reused on a rerun (LLM path only).
        max_retries, timeout: the ``openai`` client's retries (rate limits, 5xx, timeouts) and seconds per request.
        progress: show a progress bar (LLM path only; the offline path takes well under a second).
        concurrency: LLM requests in flight at once (1: one at a time). The questions do not depend on it.
        temperature, max_tokens: sampling of the first attempt at each question (None: the server's default);
            0 and a cap keep a small model's replies short and reproducible.
        titles: each chunk's page title (e.g. ``[m.get("title", "") for m in db.metadatas]``), shown to the chat
            model with the passage it asks about.

    Returns:
        ``(questions, relevance)`` with ``relevance[i] == [(id_of_the_chunk, 1.0)]``, in sample order.
    """
    texts, ids = _check_inputs(texts, ids, n, llm)
    check_whole("per_chunk", per_chunk, 1, "questions per chunk", "Use e.g. QUESTIONS_PER_CHUNK = 1.")
    concurrency = check_concurrency(concurrency)
    _check_sampling(temperature, max_tokens)
    simulated = llm.strip().lower() in (SIMULATED, "offline")
    if titles is not None and (isinstance(titles, str) or len(titles) != len(texts)):
        raise InputError(f"titles must be a list with one page title per chunk ({len(texts)}); pass "
                         "[m.get('title', '') for m in db.metadatas], or None.")
    # A chat model asks about passages (a documented name and its sentence, or prose); the simulator about chunks.
    chunk_passages = {} if simulated else {i: plan(passages(t), per_chunk) for i, t in enumerate(texts) if usable(t)}
    askable = [i for i, text in enumerate(texts) if usable(text) and (simulated or chunk_passages[i])]
    if n > len(askable) * per_chunk:
        most = len(askable) * per_chunk
        least = MIN_TRAINING_QUESTIONS
        too_small = (f" That is too few to train on: Deep Memory needs at least {least} training questions "
                     f"(N_QUESTIONS of at least {2 * least} at TRAIN_FRACTION = 0.5), so build the store from more "
                     "pages first (notebook 01: MAX_PAGES or PRESET)." if most < 2 * least else "")
        raise InputError(f"n = {n} questions asked for, but only {len(askable)} of {len(texts)} chunks have enough "
                         f"prose (at least {MIN_PROSE_WORDS} words) to ask about. Use a smaller N_QUESTIONS "
                         f"(at most {most}).{too_small}")
    order = random.Random(seed).sample(askable, len(askable))

    if simulated:
        collection = Collection(texts)
        questions, relevance = _collect(
            order, n, per_chunk, ids,
            lambda i, nth, _: offline_question(texts[i], collection, seed if nth == 0 else f"{seed}.{nth}"),
            lambda: None)
    else:
        if cache is not None:
            QuestionCache.check_path(cache)  # before any server starts
        resume = f" Questions written so far are kept in {str(cache)!r}; rerun to resume." if cache else ""
        settings = {"max_retries": max_retries, "timeout": timeout, "temperature": temperature,
                    "max_tokens": max_tokens, "concurrency": concurrency}
        store = QuestionCache(cache, MODEL_NAME if is_local(llm) else llm)
        pages = [page_name(t) for t in titles] if titles is not None else [""] * len(texts)
        questions, chunks, written = run_sync(_ask_model(llm, texts, pages, ids, chunk_passages, order, n, per_chunk,
                                                         store, resume, settings, progress))
        relevance = [[(ids[i], 1.0)] for i in chunks]
        if progress:
            tqdm.write(f"{len(questions) - written} of {len(questions)} questions read from the question cache, "
                       f"{written} written now, by {model_label(llm)}.")
    if len(questions) < n:
        warnings.warn(f"Only {len(questions)} of {n} questions: the {len(askable)} usable chunks ran out (duplicate "
                      "or failed questions are skipped). Use a smaller N_QUESTIONS or a larger corpus.", stacklevel=2)
    return questions, relevance

