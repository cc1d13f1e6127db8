"""Bounded concurrency for LLM calls: at most ``limit`` requests in flight, results in input order, and a way to
run the async code from plain Python or from a notebook cell (where an event loop is already running).

A remote API answers requests in parallel, so 8 in flight write about 8 times as many questions per second as
one at a time (up to the account's rate limit, which the ``openai`` client's retries wait out). The local
llama.cpp server answers one at a time, so there concurrency only keeps it busy."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from dmhelpers.utils.errors import check_whole

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64

T = TypeVar("T")
R = TypeVar("R")


def check_concurrency(value: Any) -> int:
    return check_whole("concurrency", value, 1, "requests in flight",
                       "Use e.g. concurrency=8 (1 sends one request at a time).", maximum=MAX_CONCURRENCY)


async def map_bounded(fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``[await fn(item) for item in items]`` with at most ``limit`` calls running at once; the first error
    cancels the calls still running and is raised."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with semaphore:
            return await fn(item)

    tasks = [asyncio.create_task(one(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run_sync(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run ``coroutine`` to the end and return its result. In a notebook cell (a loop is already running) it runs
    on a private loop in a helper thread; an interrupt (Ctrl-C) cancels it there before it is raised here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_serve, args=(loop,), name="dmhelpers-llm", daemon=True)
    thread.start()
    finished = threading.Event()

    async def guarded() -> R:
        try:
            return await coroutine
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(guarded(), loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # cancels the task on the helper loop, which closes its requests
        finished.wait(30)
        raise
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The helper thread of :func:`run_sync`: run ``loop`` until stopped, then close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
