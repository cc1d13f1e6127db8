"""Training the query adapter from (question, relevant chunks) pairs, with an honest choice of its strength.

A query-side layer learns two things: *which chunks people ask about* (a prior that helps new questions
about chunks seen in training) and a better question-to-text match (what helps questions about chunks it
never saw). Trained plainly, the first can hurt the second. So training runs grouped cross-validation over
the training questions: in each fold some chunks are held out entirely ("new": all their questions) and
some questions are held out whose chunks stay in training ("seen"). Pooled over the folds, these choose

- the number of epochs (the folds train in lockstep and stop early when nothing improves),
- the strengths ``alpha`` of the trained layer ``f`` and ``beta`` of the memory ``m`` in
  ``q' = normalise(q + g(q) * (alpha * f(q) + beta * m(q)))`` (see :mod:`dmhelpers.adapter`), and
- a gate ``g(q)`` that trusts both only near what was trained on: ``g`` rises from 0 to 1 as the
  question's highest cosine similarity to a training question rises past ``tau`` (no gate: ``g = 1``),

to gain as much as possible while doing no worse than plain search at any k on either kind of question.
If nothing beats plain search, the identity is kept (``alpha = 0``) and the result says so. The final layer
is then trained on all training questions with the chosen settings.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dmhelpers.adapter import GATE_WIDTH, QueryAdapter, adapter_delta, gate, memory, memory_values
from dmhelpers.metrics import TOP_K

Search = Callable[[np.ndarray, int], np.ndarray]  # (query vectors, k) -> row positions of the k nearest chunks


@dataclass
class TrainConfig:
    """Knobs of one training job (the defaults train in seconds on 2 CPU cores)."""

    epochs: int = 30  # the most epochs; cross-validation picks the number
    learning_rate: float = 3e-3
    batch_size: int = 64
    hidden: int = 0  # 0: linear residual layer; > 0: an MLP with this many hidden units
    temperature: float = 0.05
    hard_negatives: int = 30
    duplicate_threshold: float = 0.95  # a "negative" this similar to a positive is treated as a likely positive
    folds: int = 4  # grouped cross-validation folds that choose epochs, alpha and the gate
    patience: int = 5  # stop when the best held-out setting has not improved for this many epochs
    depth: int = 128  # held-out ranks are exact within each question's plain top ``depth`` (see _Scorer)
    alphas: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # strengths of the trained layer f
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)  # strengths of the memory m
    gates: tuple[float | None, ...] = (None, 0.5, 0.6, 0.7)  # tau values; None = no gate
    confidence: float = 2.0  # on new-chunk questions, the change must be >= 0 even this many standard errors below
    seed: int = 0


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    alpha: float
    gate: float | None
    beta: float
    epochs: int
    history: list[dict[str, float]]
    validation: dict[str, Any] = field(default_factory=dict)
    kept_identity: bool = False
    message: str = ""


class Cancelled(Exception):
    """Raised inside training when its job is cancelled."""


def make_folds(positives: list[list[int]], folds: int, rng: np.random.Generator
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(fit, seen, new) question indices per fold, grouping questions by their first relevant chunk.

    Fold ``f`` holds out every question of the chunk groups dealt to it ("new"), and one question of each
    multi-question group dealt to the other folds ("seen": its other questions stay in ``fit``). Over all folds
    each group is "new" once, and each group with several questions is "seen" ``folds - 1`` times.
    """
    groups: dict[int, list[int]] = {}
    for i, pos in enumerate(positives):
        groups.setdefault(pos[0], []).append(i)
    keys = list(groups)
    rng.shuffle(keys)
    dealt = [keys[f::folds] for f in range(folds)]
    out = []
    for f in range(folds):
        new = [i for key in dealt[f] for i in groups[key]]
        seen = [int(rng.choice(groups[key])) for g in range(folds) if g != f for key in dealt[g] if len(groups[key]) >= 2]
        held = set(new) | set(seen)
        fit = [i for i in range(len(positives)) if i not in held]
        out.append((np.array(fit, dtype=int), np.array(seen, dtype=int), np.array(new, dtype=int)))
    return out


class _Trainer:
    """One adapter and its optimizer, trained an epoch at a time on questions ``idx``.

    The loss is a softmax cross-entropy of each question against its relevant chunks (weighted by their
    grades) versus a pool shared by the batch: the other questions' positives (in-batch negatives) and every
    question's hard negatives. Pool entries nearly identical to one of a question's positives are masked for
    that question: they are likely unlabelled positives, not negatives.
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                 negatives: list[list[int]], idx: np.ndarray, cfg: TrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.cfg, self.idx = cfg, idx
        self.model = QueryAdapter(corpus.shape[1], cfg.hidden)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.queries, self.corpus = torch.from_numpy(queries), torch.from_numpy(corpus)
        self.cand = [np.array(positives[i] + negatives[i], dtype=int) for i in range(len(positives))]
        self.weight = [np.concatenate([np.array(grades[i]) / np.sum(grades[i]), np.zeros(len(negatives[i]))])
                       .astype(np.float32) for i in range(len(positives))]

    def epoch(self) -> float:
        """One pass over the questions in shuffled batches; returns the mean loss."""
        cfg, order = self.cfg, self.rng.permutation(self.idx)
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            rows = np.concatenate([np.full(len(self.cand[i]), r) for r, i in enumerate(batch)])
            pool, col = np.unique(np.concatenate([self.cand[i] for i in batch]), return_inverse=True)
            target = torch.zeros(len(batch), len(pool))
            target[rows, col] = torch.from_numpy(np.concatenate([self.weight[i] for i in batch]))
            pool_vecs = self.corpus[pool]
            is_pos = (target > 0).float()
            pos_cols = torch.nonzero(is_pos.any(dim=0)).squeeze(1)
            near = ((pool_vecs[pos_cols] @ pool_vecs.T) > cfg.duplicate_threshold).float()
            mask = ((is_pos[:, pos_cols] @ near) > 0) & (target == 0)
            logits = (self.model(self.queries[batch]) @ pool_vecs.T / cfg.temperature).masked_fill(mask, float("-inf"))
            loss = -(target * torch.log_softmax(logits, dim=1).masked_fill(mask, 0.0)).sum(dim=1).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total, batches = total + loss.item(), batches + 1
        return total / max(batches, 1)


class _Scorer:
    """Held-out questions: how many relevant chunks each adapter setting ranks within each top k.

    ``references`` and ``values`` are the fold's training questions and their chunks: the gate's and the
    memory's keys and values, as they would be for a model trained on that fold.

    Ranks are counted among candidates: the question's plain top ``depth`` (so plain-search ranks are exact)
    and every chunk labelled relevant in training (what a learned prior pulls up). A chunk outside both that
    an adapter lifts into the top 100 is not counted, which at worst flatters a setting on a rare question.
    A ranking does not change when a query vector is rescaled, so the scores of ``q + g * (a * f(q) + b * m(q))``
    are ``S0 + g * (a * (f(q) . e) + b * (m(q) . e))`` with no normalisation: each setting is a comparison of
    precomputed scores, not a new search.
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], idx: np.ndarray,
                 references: np.ndarray, values: np.ndarray, search: Search, trained: np.ndarray, depth: int) -> None:
        self.rows = np.array([r for r, i in enumerate(idx) for _ in positives[i]], dtype=int)
        cols = np.array([c for i in idx for c in positives[i]], dtype=int)
        self.share = np.array([1 / len(positives[i]) for i in idx for _ in positives[i]])
        self.ks = np.array([k for k in TOP_K if k <= len(corpus)])
        self.queries = queries[idx]
        similarity = self.queries @ references.T
        self.similarity = similarity.max(axis=1) if len(references) else np.zeros(len(idx))
        top = search(self.queries, min(depth, len(corpus)))[self.rows]  # (pairs, depth)
        self.top_vecs = corpus[top]  # (pairs, depth, dim)
        self.trained_vecs = corpus[trained]
        self.pos_vecs = corpus[cols]
        q = self.queries[self.rows]
        top_ok = top != cols[:, None]
        # A trained chunk already among a pair's top candidates (or the pair's positive) is not counted twice.
        trained_ok = trained[None, :] != cols[:, None]
        slot = np.full(len(corpus), -1)
        slot[trained] = np.arange(len(trained))
        pair, at = np.nonzero(slot[top] >= 0)
        trained_ok[pair, slot[top][pair, at]] = False
        # Scores of every candidate minus the positive's; a candidate that is the positive itself never counts.
        self.base_rel = np.where(np.concatenate([top_ok, trained_ok], axis=1), self._relative(q), -np.inf)
        self.base_in = (self.base_rel > 0).sum(axis=1)[None, :] < self.ks[:, None]
        self.base = np.array([self.share[inside].sum() for inside in self.base_in])
        self.memory_rel = (self._relative(memory(self.queries, references, values, similarity)[self.rows])
                           if len(references) else np.zeros_like(self.base_rel))

    def __len__(self) -> int:
        return len(self.queries)

    def _relative(self, vectors: np.ndarray) -> np.ndarray:
        """Per pair, ``vector . candidate - vector . positive`` for the top and the trained candidates."""
        pos = (vectors * self.pos_vecs).sum(axis=1)
        cand = np.concatenate([np.einsum("pd,pkd->pk", vectors, self.top_vecs), vectors @ self.trained_vecs.T], axis=1)
        return cand - pos[:, None]

    def grid(self, weights: dict[str, np.ndarray], combos: list[tuple[float, float, float | None]]) -> np.ndarray:
        """Per (alpha, beta, tau) in ``combos``: relevant chunks found, and those plain search found but this
        setting lost, per k: shape ``(len(combos), 2, len(ks))``.

        For each (beta, tau) the memory's share is added once; a candidate that stays above (or below) the
        positive for every alpha is counted once, and only the rest are compared per alpha.
        """
        delta = self._relative(adapter_delta(weights, self.queries)[self.rows])
        spread = np.abs(delta)
        groups: dict[tuple[float, float | None], list[int]] = {}
        for c, (a, b, tau) in enumerate(combos):
            groups.setdefault((b, tau), []).append(c)
        out = np.zeros((len(combos), 2, len(self.ks)))
        n = len(self.rows)
        for (b, tau), members in groups.items():
            g = gate(self.similarity, tau)[self.rows]
            shifted = self.base_rel + (np.float32(b) * g)[:, None] * self.memory_rel
            bound = np.float32(max(combos[c][0] for c in members)) * g[:, None] * spread
            always = (shifted - bound > 0).sum(axis=1)
            pair, cand = np.nonzero((shifted + bound > 0) & (shifted - bound <= 0))
            s_u, d_u, g_u = shifted[pair, cand], delta[pair, cand], g[pair]
            for c in members:
                above = always + np.bincount(pair, weights=s_u + np.float32(combos[c][0]) * g_u * d_u > 0, minlength=n)
                inside = above[None, :] < self.ks[:, None]
                out[c] = np.stack([(self.share * inside).sum(axis=1), (self.share * (self.base_in & ~inside)).sum(axis=1)])
        return out


def _not_worse(recall: np.ndarray, lost: np.ndarray, base: np.ndarray, n: int, z: float) -> np.ndarray:
    """True where a setting is not worse than plain search at any k, with a margin against chance.

    Per k, the questions it lost (found by plain search, not by the setting) must be outweighed by those it
    gained even when the loss rate is ``z`` standard errors higher than observed: a setting that loses a few
    held-out questions and gains as many may lose more on the next ones, so it does not qualify. With no
    losses, any gain or a tie qualifies.
    """
    diff = recall - base
    margin = z * np.sqrt(np.maximum(lost * (1 - lost), 0.0) / max(n, 1))
    return np.all(diff - margin >= -1e-9, axis=-1)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch and NumPy's BLAS on one thread: training works on small matrices, where a second thread costs
    more in hand-offs than it saves, and many times more when the cores are busy with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def train_adapter(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                  negatives: list[list[int]], cfg: TrainConfig, search: Search,
                  progress: Callable[[float, dict[str, float]], None] = lambda p, h: None,
                  should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Choose epochs, ``alpha`` and the gate by grouped cross-validation, then train on all questions.

    Args:
        queries: question embeddings ``(n, d)``, normalised.
        corpus: chunk embeddings ``(N, d)``, normalised (the store's, unchanged).
        positives, grades: per question, relevant chunk rows and their scores in (0, 1].
        negatives: per question, hard negatives mined from the index (already filtered).
        search: the store's nearest-neighbour search (for the held-out questions' candidates).
        progress: called with (share done, history row) after each epoch.
        should_stop: polled after each epoch; True cancels (raises :class:`Cancelled`).
    """
    rng = np.random.default_rng(cfg.seed)
    folds = make_folds(positives, cfg.folds, rng)
    trained = np.unique(np.concatenate([np.array(p, dtype=int) for p in positives]))
    combos = [(a, b, t) for t in cfg.gates for b in cfg.betas for a in cfg.alphas if a or b]
    runs = []
    for fit, seen, new in folds:
        values = memory_values(corpus, [positives[i] for i in fit], [grades[i] for i in fit])
        scorers = {k: _Scorer(queries, corpus, positives, idx, queries[fit], values, search, trained, cfg.depth)
                   for k, idx in (("seen", seen), ("new", new)) if len(idx)}
        runs.append((_Trainer(queries, corpus, positives, grades, negatives, fit, cfg), scorers))
    kinds = [k for k in ("seen", "new") if any(k in sc for _, sc in runs)]
    n_kind = {k: sum(len(sc[k]) for _, sc in runs if k in sc) for k in kinds}
    ks = [k for k in TOP_K if k <= len(corpus)]
    base = {k: sum(sc[k].base for _, sc in runs if k in sc) / n_kind[k] for k in kinds}
    i1, i10 = ks.index(1), ks.index(10) if 10 in ks else len(ks) - 1
    as_dict = lambda arr: {f"recall@{k}": float(v) for k, v in zip(ks, arr)}  # noqa: E731
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"gain": 1e-9, "epoch": 0}
    units = (len(folds) + 1) * cfg.epochs

    for epoch in range(1, cfg.epochs + 1):  # all folds in lockstep, so the pooled choice can stop early
        found = {k: np.zeros((len(combos), 2, len(ks))) for k in kinds}
        losses = []
        for trainer, scorers in runs:
            losses.append(trainer.epoch())
            weights = trainer.model.to_arrays()
            for k, sc in scorers.items():
                found[k] += sc.grid(weights, combos)
        recall = {k: found[k][:, 0] / n_kind[k] for k in kinds}
        ok = np.all([_not_worse(recall[k], found[k][:, 1] / n_kind[k], base[k], n_kind[k],
                                cfg.confidence if k == "new" else 0.0) for k in kinds], axis=0)
        gain = np.where(ok, sum(recall[k][:, i1] + recall[k][:, i10] - base[k][i1] - base[k][i10] for k in kinds), -np.inf)
        c = int(np.argmax(gain))
        if gain[c] > best["gain"]:
            best = {"gain": gain[c], "epoch": epoch, "combo": combos[c], "model": {k: as_dict(recall[k][c]) for k in kinds}}
        history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                        **{f"val_{k}_recall@10": float(recall[k][:, i10].max()) for k in kinds}})
        progress(epoch * len(folds) / units, history[-1])
        if should_stop():
            raise Cancelled()
        if epoch - max(best["epoch"], 1) >= cfg.patience:
            break

    validation = {"folds": len(folds), "n": n_kind, "base": {k: as_dict(base[k]) for k in kinds},
                  "model": best.get("model", {k: as_dict(base[k]) for k in kinds})}
    if best["epoch"] == 0:
        progress(1.0, history[-1])
        return TrainResult(QueryAdapter(corpus.shape[1], cfg.hidden).to_arrays(), 0.0, None, 0.0, 0, history,
                           validation, True, "No setting beat plain search on held-out questions without losing at some k; "
                           "kept the identity (deep memory = plain search).")
    (alpha, beta, tau), epochs = best["combo"], best["epoch"]
    final = _Trainer(queries, corpus, positives, grades, negatives, np.arange(len(positives)), cfg)
    for epoch in range(1, epochs + 1 if alpha else 1):  # a memory-only model needs no trained layer
        loss = final.epoch()
        progress((len(folds) * cfg.epochs + epoch) / units, {"epoch": epoch, "loss": loss})
        if should_stop():
            raise Cancelled()
    progress(1.0, history[-1])
    gate_text = "no gate" if tau is None else f"gate from similarity {tau:.1f} to a training question (width {GATE_WIDTH})"
    layer = f"{epochs} epochs of the layer with alpha={alpha:.1f}" if alpha else "no trained layer (alpha=0)"
    return TrainResult(final.model.to_arrays(), float(alpha), tau, float(beta), epochs if alpha else 0, history,
                       validation, False,
                       f"Chose {layer}, memory beta={beta:.1f} and {gate_text} by {len(folds)}-fold grouped "
                       f"cross-validation, then trained on all {len(positives)} questions.")
