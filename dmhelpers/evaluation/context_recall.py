"""RAGAS context recall of retrieval without and with deep memory, computed by the ``ragas`` library itself.

- With a chat model (``llm="gpt-4o-mini"`` and ``OPENAI_API_KEY``, or any OpenAI-compatible server through
  ``OPENAI_BASE_URL``): ragas' LLM-based ``ContextRecall``, the tutorial's metric. The reference is the text of
  the question's relevant chunks; the LLM judges which of its statements the retrieved chunks support.
- Offline (``llm="offline"``): ragas' ``NonLLMContextRecall`` (a reference chunk counts as recalled when some
  retrieved chunk is a close string match, rapidfuzz similarity >= 0.5) and ``IDBasedContextRecall`` (the share
  of reference chunk ids retrieved). Neither needs a model; both are labelled as such when printed.
"""
from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from dmhelpers.questions.qrels import check_question_lists
from dmhelpers.utils.errors import InputError, check_whole, require_api_key

if TYPE_CHECKING:
    from dmhelpers.store import VectorStore

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # ragas sends usage analytics unless told not to

OFFLINE_METRICS = ("non_llm_context_recall", "id_based_context_recall")
LLM_METRIC = "context_recall"


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _offline_scores(samples: list[dict[str, Any]]) -> dict[str, float]:
    from ragas import SingleTurnSample

    with warnings.catch_warnings():  # ragas 0.4.3 points to ragas.metrics.collections, which lacks these two
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.metrics import IDBasedContextRecall, NonLLMContextRecall

    metrics = {name: cls() for name, cls in zip(OFFLINE_METRICS, (NonLLMContextRecall, IDBasedContextRecall))}
    rows = [SingleTurnSample(**s) for s in samples]

    async def score_all() -> dict[str, list[float]]:
        return {name: list(await asyncio.gather(*(m.single_turn_ascore(r) for r in rows)))
                for name, m in metrics.items()}

    return {name: _mean(values) for name, values in _run(score_all()).items()}


def _llm_scores(samples: list[dict[str, Any]], model: str) -> dict[str, float]:
    require_api_key(f"LLM = {model!r}", "use LLM = 'offline' for ragas' non-LLM metrics")
    import openai
    from ragas.llms import llm_factory
    from ragas.metrics.collections import ContextRecall

    metric = ContextRecall(llm=llm_factory(model, client=openai.AsyncOpenAI()))
    inputs = [{"user_input": s["user_input"], "retrieved_contexts": s["retrieved_contexts"],
               "reference": "\n\n".join(s["reference_contexts"])} for s in samples]
    results = _run(metric.abatch_score(inputs))
    return {LLM_METRIC: _mean([r.value for r in results])}


def _run(coroutine):
    """Run a coroutine from plain Python or from a notebook cell (where an event loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def context_recall(db: VectorStore, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
                   k: int = 10, llm: str = "offline") -> dict[str, Any]:
    """RAGAS context recall of the top ``k`` chunks, without and (when a model is active) with deep memory.

    Prints the scores side by side and returns ``{"k", "n", "llm", "ragas", "scores": {metric: {"without
    model": x, "with model": y}}}``.
    """
    check_question_lists(queries, relevance, "context_recall")
    k = check_whole("k", k, 1, "chunks to retrieve", "Use e.g. RAGAS_K = 10.")
    text_of = dict(zip(db.ids, db.texts))
    missing = sorted({cid for rel in relevance for cid, _ in rel if cid not in text_of})
    if missing:
        raise InputError(f"Relevance names chunk ids not in this store, e.g. {missing[0]!r}. Use questions made "
                         "for this store (notebook 02 saves them under the store).")
    modes = {"without model": False, **({"with model": True} if db.deep_memory.get_model() else {})}
    scores: dict[str, dict[str, float]] = {}
    for mode, deep in modes.items():
        hits = db.search(list(queries), k=k, deep_memory=deep)
        samples = [{"user_input": q, "retrieved_contexts": [h.text for h in hs],
                    "retrieved_context_ids": [h.id for h in hs],
                    "reference_contexts": [text_of[cid] for cid, s in rel if s > 0],
                    "reference_context_ids": [cid for cid, s in rel if s > 0]}
                   for q, hs, rel in zip(queries, hits, relevance)]
        found = _offline_scores(samples) if llm == "offline" else _llm_scores(samples, llm)
        for name, value in found.items():
            scores.setdefault(name, {})[mode] = value
    how = "offline, no LLM: string similarity and chunk ids" if llm == "offline" else f"LLM judge {llm}"
    print(f"RAGAS context recall of the top {k} chunks, {len(queries)} questions (ragas {version('ragas')}, {how})")
    print(f"{'metric':<26}" + "".join(f"{m:>15}" for m in modes))
    for name, row in scores.items():
        print(f"{name:<26}" + "".join(f"{row[m]:>15.2f}" for m in modes))
    if "with model" not in modes:
        print("No Deep Memory model is active: only plain search is scored.")
    return {"k": k, "n": len(queries), "llm": llm, "ragas": version("ragas"), "scores": scores}
