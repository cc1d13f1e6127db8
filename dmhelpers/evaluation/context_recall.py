"""RAGAS context recall of retrieval without and with deep memory, computed by the ``ragas`` library itself.

- With a chat model (``llm="gpt-4o-mini"`` and ``OPENAI_API_KEY``, or any OpenAI-compatible server through
  ``OPENAI_BASE_URL``): ragas' LLM-based ``ContextRecall``, the tutorial's metric. The reference is the text of
  the question's relevant chunks; the LLM judges which of its statements the retrieved chunks support.
- Offline (``llm="offline"``): ragas' ``NonLLMContextRecall`` (a reference chunk counts as recalled when some
  retrieved chunk is a close string match, rapidfuzz similarity >= 0.5) and ``IDBasedContextRecall`` (the share
  of reference chunk ids retrieved). Neither needs a model; both are labelled as such when printed.
- ``llm="local"``: the offline metrics, and a note saying why. The bundled 135M model cannot judge: ragas asks
  it to split the reference into statements and attribute each to ten retrieved chunks, in a JSON shape it does
  not keep to (its replies fail to parse or are cut off), so its "scores" would be noise.

The LLM judge sends up to ``concurrency`` requests at once (one per question).
"""
from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from dmhelpers.llm import DEFAULT_CONCURRENCY, chat_endpoint, check_concurrency, is_local, map_bounded, run_sync
from dmhelpers.questions.qrels import check_question_lists, relevance_pairs
from dmhelpers.utils.errors import InputError, check_whole

if TYPE_CHECKING:
    from dmhelpers.store import VectorStore

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # ragas sends usage analytics unless told not to

OFFLINE_METRICS = ("non_llm_context_recall", "id_based_context_recall")
LLM_METRIC = "context_recall"
LOCAL_NOTE = ("LLM = 'local': the bundled 135M model cannot judge context recall (ragas' judging prompt asks for "
              "statement-by-statement verdicts in JSON that it does not produce reliably), so the non-LLM metrics "
              "are reported instead.")


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

    return {name: _mean(values) for name, values in run_sync(score_all()).items()}


def _llm_scores(samples: list[dict[str, Any]], model: str, concurrency: int) -> dict[str, float]:
    inputs = [{"user_input": s["user_input"], "retrieved_contexts": s["retrieved_contexts"],
               "reference": "\n\n".join(s["reference_contexts"])} for s in samples]
    with chat_endpoint(model, f"LLM = {model!r}", "use LLM = 'offline' for ragas' non-LLM metrics") as endpoint:
        results = run_sync(_judge(endpoint, inputs, concurrency))
    return {LLM_METRIC: _mean([r.value for r in results])}


async def _judge(endpoint, inputs: list[dict[str, Any]], concurrency: int) -> list:
    """ragas' LLM ``ContextRecall`` of each sample, at most ``concurrency`` judged at once."""
    from ragas.llms import llm_factory
    from ragas.metrics.collections import ContextRecall

    async with endpoint.async_client() as client:
        metric = ContextRecall(llm=llm_factory(endpoint.model, client=client))
        return await map_bounded(lambda row: metric.ascore(**row), inputs, concurrency)


def context_recall(db: VectorStore, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
                   k: int = 10, llm: str = "offline", concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, Any]:
    """RAGAS context recall of the top ``k`` chunks, without and (when a model is active) with deep memory.

    ``llm``: ``"offline"`` or ``"local"`` (ragas' non-LLM metrics; see the module docstring for why not the
    local model) or a chat model name (ragas' LLM judge, ``concurrency`` requests in flight). Prints the scores
    side by side and returns ``{"k", "n", "llm", "ragas", "scores": {metric: {"without model": x, "with model":
    y}}}``.
    """
    check_question_lists(queries, relevance, "context_recall")
    relevance = [relevance_pairs(n, rel) for n, rel in enumerate(relevance)]  # a chunk listed twice counts once
    k = check_whole("k", k, 1, "chunks to retrieve", "Use e.g. RAGAS_K = 10.")
    concurrency = check_concurrency(concurrency)
    judged = llm != "offline" and not is_local(llm)
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
        found = _llm_scores(samples, llm, concurrency) if judged else _offline_scores(samples)
        for name, value in found.items():
            scores.setdefault(name, {})[mode] = value
    how = f"LLM judge {llm}" if judged else "offline, no LLM: string similarity and chunk ids"
    if is_local(llm):
        print(LOCAL_NOTE)
    print(f"RAGAS context recall of the top {k} chunks, {len(queries)} questions (ragas {version('ragas')}, {how})")
    print(f"{'metric':<26}" + "".join(f"{m:>15}" for m in modes))
    for name, row in scores.items():
        print(f"{name:<26}" + "".join(f"{row[m]:>15.2f}" for m in modes))
    if "with model" not in modes:
        print("No Deep Memory model is active: only plain search is scored.")
    return {"k": k, "n": len(queries), "llm": llm, "ragas": version("ragas"), "scores": scores}
