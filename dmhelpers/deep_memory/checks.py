"""The checks around a training job: its questions before it starts, and its model before it becomes active or is
loaded for search.

- :func:`validate_questions`: questions and relevance as training and evaluation need them (one rule for both;
  a chunk listed twice counts once, with its highest score: :func:`dmhelpers.questions.qrels.dedupe`).
- :func:`check_model`: a model whose numbers are not all finite (a diverged run, a damaged ``job.json`` or
  weights file) is refused rather than searched with.
- :func:`final_check`: the model trained on all questions must rank its own training questions at least about as
  well as plain search; a run that diverged after cross-validation chose its settings does not.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dmhelpers.deep_memory.adapter import CLOSED, apply_adapter
from dmhelpers.deep_memory.config import MIN_TRAINING_QUESTIONS, TrainConfig
from dmhelpers.evaluation.metrics import recall_at_k
from dmhelpers.questions.qrels import as_list, relevance_pairs
from dmhelpers.utils.errors import DeepMemoryError, InputError, StoreError

DEFAULT_LEARNING_RATE = TrainConfig.learning_rate
MAX_LEARNING_RATE = 10.0  # Adam's step size: far above this every run diverges
FINAL_KS = (1, 3, 5, 10)  # the final check's recall@k on the training questions
FINAL_TOLERANCE = 0.05  # how far below plain search (mean recall over FINAL_KS) the final model may fall
CHECK_SAMPLE = 2000  # training questions the final check searches with (a seeded sample of more)


class DamagedModelError(StoreError):
    """A stored model's numbers are NaN, inf or missing: it is refused, never searched with."""


class DivergedError(DeepMemoryError, RuntimeError):
    """The final model of a job is unusable (non-finite or worse than plain search); it is not made active."""


def validate_questions(queries: Any, relevance: Any, rows: dict[str, int], n_chunks: int, where: str,
                       minimum: int = MIN_TRAINING_QUESTIONS) -> tuple[list[str], list[list[int]], list[list[float]]]:
    """Questions, and per question its relevant chunk rows (``rows`` maps chunk ids to them) and scores above 0;
    an :class:`InputError` that names the first problem and the fix otherwise."""
    if isinstance(queries, str):
        raise InputError("queries must be a list of questions, not a single string.")
    queries = as_list("queries", queries, "a list of questions")
    relevance = as_list("relevance", relevance, "a list with one list of (chunk_id, score) pairs per question")
    if not queries:
        raise InputError("Got no queries. Generate questions first (notebook 02).")
    if len(queries) != len(relevance):
        raise InputError(f"Got {len(queries)} queries but {len(relevance)} relevance lists; pass one list of "
                         "(chunk_id, score) pairs per query.")
    if n_chunks == 0:
        raise StoreError(f"The store at {where} has no chunks. Build it first (notebook 01).")
    positives, grades = [], []
    for n, (q, rel) in enumerate(zip(queries, relevance)):
        if not isinstance(q, str) or not q.strip():
            raise InputError(f"Query {n} is empty: every query must be a non-empty question.")
        pairs = relevance_pairs(n, rel)
        if not pairs:
            raise InputError(f"Query {n} has no relevant chunks: give at least one (chunk_id, score) pair.")
        for cid, _ in pairs:
            if cid not in rows:
                raise InputError(f"Relevance of query {n} names chunk id {cid!r}, which is not in this store. "
                                 "Use ids from db.ids (questions made for another store do not fit); if notebook "
                                 "01 rebuilt the store after notebook 02 wrote these questions, re-run notebook 02.")
        kept = [(rows[cid], score) for cid, score in pairs if score > 0]
        if not kept:
            raise InputError(f"Query {n} has only zero scores: give at least one chunk a score above 0.")
        positives.append([r for r, _ in kept])
        grades.append([s for _, s in kept])
    if len(queries) < minimum:
        raise InputError(f"Got {len(queries)} queries: too few to hold out validation questions. Train on at "
                         f"least {minimum} (the tutorial uses 100).")
    return queries, positives, grades


def check_learning_rate(learning_rate: float) -> None:
    """Refuse a step size at which training can only diverge."""
    if learning_rate > MAX_LEARNING_RATE:
        raise InputError(f"learning_rate={learning_rate:g} is far too large: training diverges (its weights "
                         f"overflow). Use at most {MAX_LEARNING_RATE:g}, e.g. LEARNING_RATE = 0.003.")


def check_groups(positives: list[list[int]], ids: Sequence[str]) -> None:
    """Cross-validation holds out whole chunks: it needs questions about at least two (by first relevant chunk)."""
    first = {p[0] for p in positives}
    if len(first) < 2:
        raise InputError(f"The {len(positives)} training questions are all about one chunk ({ids[next(iter(first))]!r}"
                         "): cross-validation holds out whole chunks, so it needs questions about at least 2. Write "
                         "questions about more chunks (generate_questions over more of the store).")


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and bool(np.isfinite(value))


def check_model(job_id: str, numbers_: dict[str, Any], arrays: dict[str, np.ndarray | None]) -> None:
    """Refuse a model whose settings (``alpha``, ``beta``, ``alpha_out``, and ``gate`` unless it
    is None) or arrays are not all finite numbers: applied to a question it would give NaN or zero vectors, i.e.
    silent garbage."""
    bad = [k for k, v in numbers_.items() if not _finite(v) and not (k == "gate" and v is None)]  # None: no gate
    bad += [k for k, a in arrays.items() if a is not None and not np.all(np.isfinite(a))]
    if bad:
        raise DamagedModelError(f"The model record of job {job_id} is damaged: {', '.join(bad)} "
                                f"{'is' if len(bad) == 1 else 'are'} not a finite number (NaN, inf or missing). "
                                "Retrain (db.deep_memory.train(...)), or choose another job "
                                "(db.deep_memory.set_model(...)).")


def final_check(job_id: str, weights: dict[str, np.ndarray], settings: dict[str, Any], vectors: np.ndarray,
                corpus: np.ndarray, positives: list[list[int]], search: Callable[[np.ndarray, int], np.ndarray],
                learning_rate: float, seed: int = 0) -> None:
    """Check the final model before it is saved and made active; a :class:`DivergedError` naming the cause and
    the fix unless

    - its numbers are all finite;
    - it turns (samples of) its training questions and, as stand-ins for new questions, the chunks' vectors into
      finite, non-zero vectors;
    - on its training questions it is not worse than plain search by more than :data:`FINAL_TOLERANCE` (mean
      recall over :data:`FINAL_KS`), both as they are and, when ``alpha_out`` is set, as new questions are
      treated (the gate shut: only ``alpha_out`` acts). A layer that overflowed acts only outside the gate when
      the settings chosen use no layer behind it, so the first check alone would not see it.

    ``weights`` are the arrays to be saved (with ``gate.references`` and ``memory.values``), ``settings`` the
    job's ``alpha``, ``beta``, ``alpha_out`` and ``gate``.
    """
    fix = (f"Train again with a smaller learning_rate (this job used {learning_rate:g}; the default is 0.003) or "
           "fewer epochs; the active model is unchanged." if learning_rate > DEFAULT_LEARNING_RATE else
           "Train again with fewer epochs or another seed; the active model is unchanged.")
    try:
        check_model(job_id, settings, weights)
    except DamagedModelError:
        raise DivergedError(f"Training diverged: the final model's weights are not all finite numbers (they "
                            f"overflowed). {fix}") from None
    layer = {k: v for k, v in weights.items() if not k.startswith(("gate.", "memory."))}
    rng = np.random.default_rng(seed)
    sample = lambda n: np.sort(rng.choice(n, min(n, CHECK_SAMPLE), replace=False))  # noqa: E731
    idx = sample(len(vectors))
    plain = np.asarray(vectors, dtype=np.float32)[idx]
    relevant = [positives[i] for i in idx]

    def apply(q: np.ndarray, gate_: float | None) -> np.ndarray:
        with np.errstate(all="ignore"):  # overflow is what is looked for
            return apply_adapter(layer, q, settings["alpha"], gate_, weights.get("gate.references"),
                                 settings["beta"], weights.get("memory.values"), settings["alpha_out"])

    runs = {"": apply(plain, settings["gate"])}
    if settings["alpha_out"]:  # as if they were new questions: the gate shut, only alpha_out acting
        runs[" when taken as new questions"] = apply(plain, CLOSED)
    chunks = apply(np.asarray(corpus, dtype=np.float32)[sample(len(corpus))], settings["gate"])
    for out in (*runs.values(), chunks):
        if not np.all(np.isfinite(out)) or not np.all(np.linalg.norm(out, axis=1) > 1e-6):
            raise DivergedError("Training diverged: the final model turns questions into NaN, infinite or zero "
                                f"vectors (its weights overflowed). {fix}")
    ks = [k for k in FINAL_KS if k <= len(corpus)] or [len(corpus)]
    recall = lambda q: float(np.mean(list(recall_at_k(search(q, max(ks)).tolist(), relevant, ks).values())))  # noqa: E731
    base = recall(plain)
    for where, out in runs.items():
        model = recall(out)
        if model < base - FINAL_TOLERANCE:
            raise DivergedError(f"Training diverged: the final model ranks its own training questions worse than plain "
                                f"search{where} (mean recall@{'/'.join(map(str, ks))} {model:.2f} against {base:.2f}). "
                                f"{fix}")
