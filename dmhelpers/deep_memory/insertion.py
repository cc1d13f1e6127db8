"""Deep Memory's memory of *which chunks people ask about*, as a rank insertion with bounded harm.

A question very like a training question most likely asks about the same chunk. So, for a question whose nearest
training question has cosine similarity ``s``, that training question's relevant chunk is put at rank ``p(s)`` of
the results, and plain search's results from there on move down by one::

    p(s) = the first slot p (1, then 3, then 10) whose threshold t_p <= s; no insertion when s < every t_p

The chunk is only ever lifted (if plain search already ranks it at ``p`` or better, nothing changes). So a question
wrongly taken for a repeat loses little, by construction: each plain result moves down by one place at most, and
only results at rank ``p`` or below move. Its recall@k drops only if its own chunk was at exactly rank ``k`` and
``k >= p``. Confident matches go to the top; weaker ones only into the top 10, where a wrong guess costs the least.

The thresholds are chosen on held-out training questions (:func:`calibrate`): the lowest threshold, never below the
slot's floor, at which no held-out question about a chunk outside its fold's training part lost anything at any
k, while held-out questions about chunks in training gained. A slot that cannot show both stays shut.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dmhelpers.deep_memory.checks import DamagedModelError
from dmhelpers.deep_memory.config import FLOORS, SLOTS

GRID = tuple(round(0.5 + 0.025 * i, 3) for i in range(19))  # thresholds tried: 0.5 to 0.95


def nearest(vectors: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per question, its highest cosine similarity to a training question and that question's index."""
    if not len(references):
        return np.full(len(vectors), -1.0, dtype=np.float32), np.zeros(len(vectors), dtype=int)
    sim = np.asarray(vectors, dtype=np.float32) @ references.T
    best = sim.argmax(axis=1)
    return sim[np.arange(len(vectors)), best], best


def positions(similarity: np.ndarray, slots: list[tuple[int, float]]) -> np.ndarray:
    """Per question, the rank (1-based) its remembered chunk goes to, or 0 for no insertion."""
    pos = np.zeros(len(similarity), dtype=int)
    for rank, threshold in sorted(slots, reverse=True):  # the best slot a question passes wins
        pos = np.where(similarity >= threshold, rank, pos)
    return pos


def insert_rows(rows: np.ndarray, chunk: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``rows`` (n, w) of ranked chunk rows with ``chunk[i]`` put at rank ``pos[i]`` (1-based; 0: unchanged).

    The chunk is only lifted: a row that already ranks it at ``pos`` or better is unchanged, and so is a row
    shorter than ``pos`` (so the first k results are the same whatever k is asked for). Otherwise it is taken out
    of where it was (if anywhere) and the rows from ``pos`` on move down by one; the row keeps its width.
    """
    rows = np.asarray(rows)
    n, w = rows.shape
    present = rows == chunk[:, None]
    where = np.where(present.any(axis=1), present.argmax(axis=1), w)
    act = (pos > 0) & (pos <= w) & (where > pos - 1)  # a rank past the results: not shown (results are prefixes)
    if not act.any():
        return rows
    out = rows.copy()
    r = np.flatnonzero(act)
    j = np.arange(w)[None, :]
    p, wh = pos[r, None] - 1, where[r, None]
    src = np.where(j < p, j, np.where(j - 1 < wh, j - 1, j))
    moved = np.take_along_axis(rows[r], np.clip(src, 0, w - 1), axis=1)
    out[r] = np.where(j == p, chunk[r, None], moved)
    return out


def recall_rows(rows: np.ndarray, positives: list[list[int]], grades: list[list[float]], ks: list[int]) -> np.ndarray:
    """Per question and k, the grade-weighted share of its relevant chunks among its first k ``rows``."""
    out = np.zeros((len(rows), len(ks)), dtype=np.float64)
    for i, (row, pos, grade) in enumerate(zip(rows, positives, grades)):
        share = np.asarray(grade, dtype=np.float64) / np.sum(grade)
        at = {int(c): r for r, c in enumerate(row)}
        ranks = np.array([at.get(int(c), len(row)) for c in pos])
        out[i] = [(share * (ranks < k)).sum() for k in ks]
    return out


class Evidence:
    """Held-out questions of one kind over all folds: plain rows, remembered chunk and similarity, relevance."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.chunk: list[np.ndarray] = []
        self.similarity: list[np.ndarray] = []
        self.positives: list[list[int]] = []
        self.grades: list[list[float]] = []

    def add(self, rows: np.ndarray, chunk: np.ndarray, similarity: np.ndarray, positives: list[list[int]],
            grades: list[list[float]]) -> None:
        self.rows.append(rows)
        self.chunk.append(chunk)
        self.similarity.append(similarity)
        self.positives += positives
        self.grades += grades

    def done(self, ks: list[int]) -> None:
        width = max((r.shape[1] for r in self.rows), default=1)
        self.rows = np.concatenate(self.rows) if self.rows else np.zeros((0, width), dtype=int)
        self.chunk = np.concatenate(self.chunk) if self.chunk else np.zeros(0, dtype=int)
        self.similarity = np.concatenate(self.similarity) if self.similarity else np.zeros(0, dtype=np.float32)
        self.ks = ks
        self.base = recall_rows(self.rows, self.positives, self.grades, ks)

    def __len__(self) -> int:
        return len(self.positives)

    def recall(self, slots: list[tuple[int, float]]) -> np.ndarray:
        """Per question and k, recall with ``slots``."""
        pos = positions(self.similarity, slots)
        return recall_rows(insert_rows(self.rows, self.chunk, pos), self.positives, self.grades, self.ks)

    def opened(self, slots: list[tuple[int, float]]) -> int:
        return int((positions(self.similarity, slots) > 0).sum())


def first_chunk(positives: list[int], grades: list[float]) -> int:
    """The chunk a training question remembers: its most relevant one (the first of equals)."""
    return int(positives[int(np.argmax(grades))])


def evidence(queries: np.ndarray, positives: list[list[int]], grades: list[list[float]],
             folds: list[tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]], ks: list[int]
             ) -> dict[str, Evidence]:
    """Per kind ("seen", "new"), the held-out evidence over ``folds``: (fit indices, {kind: (held-out indices,
    their plain-search rows)})."""
    out = {"seen": Evidence(), "new": Evidence()}
    for fit, held in folds:
        remembered = np.array([first_chunk(positives[i], grades[i]) for i in fit], dtype=int)
        for kind, (idx, rows) in held.items():
            if not len(idx):
                continue
            sim, which = nearest(queries[idx], queries[fit])
            out[kind].add(rows, remembered[which], sim, [positives[i] for i in idx], [grades[i] for i in idx])
    for e in out.values():
        e.done(ks)
    return out


def calibrate(held: dict[str, Evidence], floors: tuple[float, ...] = FLOORS, slots: tuple[int, ...] = SLOTS
              ) -> tuple[list[tuple[int, float]], dict[str, Any]]:
    """The slots to open and their thresholds, and the held-out evidence for the job record.

    Slot by slot (rank 1 first), the lowest threshold of :data:`GRID`, not below the slot's floor, at which no
    held-out new-chunk question loses anything at any k and held-out seen-chunk questions gain in all (summed over
    k) — on top of the slots already opened. A slot no threshold qualifies for stays shut.
    """
    seen, new = held["seen"], held["new"]
    chosen: list[tuple[int, float]] = []
    if len(seen):
        for rank, floor in zip(slots, floors):
            if rank > seen.rows.shape[1]:
                continue
            before = seen.recall(chosen).sum()
            for t in GRID:
                if t < floor - 1e-9:
                    continue
                trial = chosen + [(rank, float(t))]
                lost = (new.recall(trial) < new.base - 1e-9).any() if len(new) else False
                if not lost and seen.recall(trial).sum() > before + 1e-9:
                    chosen = trial
                    break
    as_dict = lambda a: {f"recall@{k}": round(float(v), 6) for k, v in zip(seen.ks, a)}  # noqa: E731
    report: dict[str, Any] = {"slots": [list(s) for s in chosen], "n": {}, "opened": {}, "base": {}, "model": {}}
    for kind, e in held.items():
        if len(e):
            report["n"][kind] = len(e)
            report["opened"][kind] = e.opened(chosen)
            report["base"][kind] = as_dict(e.base.mean(axis=0))
            report["model"][kind] = as_dict(e.recall(chosen).mean(axis=0))
    return chosen, report


def describe(slots: list[tuple[int, float]]) -> str:
    """The slots in words: "rank 1 above similarity 0.70, rank 10 above 0.60"."""
    if not slots:
        return "off"
    parts = [f"rank {rank} above similarity {t:.2f}" if i == 0 else f"rank {rank} above {t:.2f}"
             for i, (rank, t) in enumerate(slots)]
    return ", ".join(parts)


# ---------------------------------------------------------------------- the search path
def load_memory(job: dict[str, Any], weights: dict[str, np.ndarray], store: Any) -> dict[str, Any] | None:
    """The memory of a job's model, popped from its ``weights`` (``memory.keys``: the training questions'
    vectors, ``memory.chunks``: the chunk row each remembers), with the remembered chunks' vectors and search
    results from ``store``; None when the job's memory is off. :class:`DamagedModelError` if it does not fit."""
    slots = [(int(r), float(t)) for r, t in job.get("slots", [])]
    keys, chunks = weights.pop("memory.keys", None), weights.pop("memory.chunks", None)
    if not slots:
        return None
    if (keys is None or chunks is None or len(keys) != len(chunks)
            or not np.all((chunks >= 0) & (chunks < len(store)))):
        raise DamagedModelError(f"The model record of job {job['id']} is damaged: its memory (memory.keys, "
                                "memory.chunks) is missing or does not fit this store. Retrain "
                                "(db.deep_memory.train(...)), or choose another job (db.deep_memory.set_model(...)).")
    rows = [int(r) for r in np.unique(chunks)]
    vectors = store.embeddings
    return {"keys": keys, "chunks": chunks.astype(np.int64), "slots": slots,
            "vectors": {r: np.asarray(vectors[r], dtype=np.float32) for r in rows},
            "hits": dict(zip(rows, store.hits(rows)))}


def targets(memory: dict[str, Any] | None, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per plain query vector: the chunk row the memory puts in its results and the rank it goes to (1-based;
    0 where the memory does not act)."""
    if memory is None:
        return np.zeros(len(vectors), dtype=np.int64), np.zeros(len(vectors), dtype=int)
    similarity, which = nearest(vectors, memory["keys"])
    return memory["chunks"][which], positions(similarity, memory["slots"])


def rerank_rows(memory: dict[str, Any] | None, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Ranked chunk ``rows`` with the memory's insertions for plain query ``vectors``."""
    chunk, pos = targets(memory, vectors)
    return insert_rows(rows, chunk, pos)


def rerank_hits(memory: dict[str, Any] | None, vectors: np.ndarray, moved: np.ndarray, hits: list[list[Any]],
                k: int) -> list[list[Any]]:
    """Search results with the memory's insertions for plain query ``vectors`` (``moved``: the vectors searched,
    for the score of a chunk lifted from beyond the results), as :func:`rerank_rows` does for rows."""
    chunk, pos = targets(memory, vectors)
    if not pos.any():
        return hits
    out = []
    for q, row, c, p in zip(moved, hits, chunk, pos):
        remembered = memory["hits"][int(c)]
        at = next((i for i, h in enumerate(row) if h.id == remembered.id), len(row))
        p = int(p)
        if p == 0 or p > min(k, len(row)) or at <= p - 1:  # as insert_rows: the first k results never depend on k
            out.append(row)
            continue
        hit = row[at] if at < len(row) else remembered._replace(score=float(q @ memory["vectors"][int(c)]),
                                                               metadata=dict(remembered.metadata))
        rest = [h for h in row if h.id != remembered.id]
        out.append((rest[:p - 1] + [hit] + rest[p - 1:])[:k])
    return out
