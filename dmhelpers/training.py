"""Training the query adapter from (question, relevant chunks) pairs, with an honest choice of its strength.

A query-side layer learns two things: *which chunks people ask about* (a prior that helps new questions
about chunks seen in training) and a better question-to-text match (what helps questions about chunks it
never saw). Trained plainly, the first can hurt the second. So training runs grouped cross-validation over
the training questions: in each fold some chunks are held out entirely ("new": all their questions) and
some questions are held out whose chunks stay in training ("seen"). Pooled over the folds, these choose

- the number of epochs,
- the layer's strength ``alpha`` in ``q' = normalise(q + alpha * g(q) * f(q))``, and
- a gate ``g(q)`` that trusts the layer only near what it was trained on: ``g`` rises from 0 to 1 as the
  question's highest cosine similarity to a training question rises past ``tau`` (no gate: ``g = 1``),

to gain as much as possible while doing no worse than plain search at any k on either kind of question.
If nothing beats plain search, the identity is kept (``alpha = 0``) and the result says so. The final layer
is then trained on all training questions with the chosen settings.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dmhelpers.adapter import GATE_WIDTH, QueryAdapter, adapter_delta, gate
from dmhelpers.metrics import TOP_K


@dataclass
class TrainConfig:
    """Knobs of one training job (the defaults train in seconds on 2 CPU cores)."""

    epochs: int = 30
    learning_rate: float = 3e-3
    batch_size: int = 64
    hidden: int = 0  # 0: linear residual layer; > 0: an MLP with this many hidden units
    temperature: float = 0.05
    hard_negatives: int = 30
    duplicate_threshold: float = 0.95  # a "negative" this similar to a positive is treated as a likely positive
    folds: int = 4  # grouped cross-validation folds that choose epochs, alpha and the gate
    alphas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    gates: tuple[float | None, ...] = (None, 0.3, 0.4, 0.5, 0.6, 0.7)  # tau values; None = no gate
    confidence: float = 1.0  # on new-chunk questions, the change must be >= 0 even this many standard errors below
    seed: int = 0


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    alpha: float
    gate: float | None
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


class _Scorer:
    """Held-out questions scored against the whole corpus: counts of relevant chunks within each top k.

    A ranking does not change when a query vector is rescaled, so scores of ``q + a * f(q)`` are
    ``S0 + a * (f(q) @ corpus.T)`` with no normalisation; a relevant chunk's rank is the number of chunks
    scoring higher.
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], idx: np.ndarray,
                 references: np.ndarray) -> None:
        self.queries, self.corpus = queries[idx], corpus
        self.rows = np.array([r for r, i in enumerate(idx) for _ in positives[i]], dtype=int)
        self.cols = np.array([c for i in idx for c in positives[i]], dtype=int)
        self.share = np.array([1 / len(positives[i]) for i in idx for _ in positives[i]])
        self.ks = [k for k in TOP_K if k <= len(corpus)]
        self.base_scores = self.queries @ corpus.T
        self.similarity = (self.queries @ references.T).max(axis=1) if len(references) else np.zeros(len(idx))
        self.base_in = self._within(self.base_scores)
        self.base = np.array([self.share[inside].sum() for inside in self.base_in])

    def _within(self, scores: np.ndarray) -> np.ndarray:
        """For each k and each relevant (question, chunk) pair: is the chunk within the question's top k?"""
        pos = scores[self.rows, self.cols]
        rank = (scores[self.rows] > pos[:, None]).sum(axis=1)
        return np.array([rank < k for k in self.ks])

    def hits(self, scores: np.ndarray) -> np.ndarray:
        """Per k: relevant chunks found, and those found by plain search but lost (fractional per question)."""
        inside = self._within(scores)
        return np.stack([(self.share * inside).sum(axis=1), (self.share * (self.base_in & ~inside)).sum(axis=1)])

    def grid(self, weights: dict[str, np.ndarray], alphas, gates) -> dict[tuple[float, float | None], np.ndarray]:
        delta = adapter_delta(weights, self.queries) @ self.corpus.T
        out = {}
        for tau in gates:
            g = gate(self.similarity, tau)[:, None]
            for a in alphas:
                out[(a, tau)] = self.hits(self.base_scores + a * g * delta)
        return out


def _fit(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
         negatives: list[list[int]], idx: np.ndarray, cfg: TrainConfig, epochs: int,
         on_epoch: Callable[[int, float, QueryAdapter], None]) -> QueryAdapter:
    """Train an adapter on questions ``idx`` for ``epochs`` (softmax over positives, in-batch and hard negatives)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = QueryAdapter(corpus.shape[1], cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    q_all = torch.from_numpy(queries)
    e_all = torch.from_numpy(corpus)
    # Per question, once: its candidate rows (positives first, then hard negatives) and their target weights.
    cand = [np.array(positives[i] + negatives[i], dtype=int) for i in range(len(positives))]
    weight = [np.concatenate([np.array(grades[i]) / np.sum(grades[i]), np.zeros(len(negatives[i]))]) for i in range(len(positives))]
    for epoch in range(1, epochs + 1):
        order = rng.permutation(idx)
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            rows = np.concatenate([np.full(len(cand[i]), r) for r, i in enumerate(batch)])
            items = np.concatenate([cand[i] for i in batch])
            pool, col = np.unique(items, return_inverse=True)  # shared pool: in-batch and hard negatives
            target = torch.zeros(len(batch), len(pool))
            target[rows, col] = torch.from_numpy(np.concatenate([weight[i] for i in batch]).astype(np.float32))
            pool_vecs = e_all[pool]
            is_pos = (target > 0).float()
            pos_cols = torch.nonzero(is_pos.any(dim=0)).squeeze(1)
            near = ((pool_vecs[pos_cols] @ pool_vecs.T) > cfg.duplicate_threshold).float()
            mask = ((is_pos[:, pos_cols] @ near) > 0) & (target == 0)  # near-duplicates of a positive: not negatives
            logits = (model(q_all[batch]) @ pool_vecs.T / cfg.temperature).masked_fill(mask, float("-inf"))
            loss = -(target * torch.log_softmax(logits, dim=1).masked_fill(mask, 0.0)).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        on_epoch(epoch, total / max(batches, 1), model)
    return model


def _not_worse(recall: np.ndarray, lost: np.ndarray, base: np.ndarray, n: int, z: float) -> np.ndarray:
    """True where the paired change in recall (model minus plain search, per question) is not below zero by
    more than ``z`` standard errors at every k: a drop too small to see in the held-out questions is not enough
    to be sure of no harm, so the setting must not even look like it is dropping."""
    diff = recall - base
    gained = diff + lost
    variance = np.maximum(gained + lost - diff ** 2, 0.0)  # per-question changes are -1, 0 or +1 (fractional for many)
    lower = diff - z * np.sqrt(variance / max(n, 1))
    return np.all(lower >= -1e-9, axis=-1)


def train_adapter(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                  negatives: list[list[int]], cfg: TrainConfig,
                  progress: Callable[[float, dict[str, float]], None] = lambda p, h: None,
                  should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Choose epochs, ``alpha`` and the gate by grouped cross-validation, then train on all questions.

    Args:
        queries: question embeddings ``(n, d)``, normalised.
        corpus: chunk embeddings ``(N, d)``, normalised (the store's, unchanged).
        positives, grades: per question, relevant chunk rows and their scores in (0, 1].
        negatives: per question, hard negatives mined from the index (already filtered).
        progress: called with (share done, history row) after each epoch.
        should_stop: polled after each epoch; True cancels (raises :class:`Cancelled`).
    """
    rng = np.random.default_rng(cfg.seed)
    folds = make_folds(positives, cfg.folds, rng)
    combos = [(a, t) for t in cfg.gates for a in cfg.alphas]
    n_kind = {"seen": sum(len(s) for _, s, _ in folds), "new": sum(len(n) for _, _, n in folds)}
    kinds = [k for k in ("seen", "new") if n_kind[k]]
    base = {k: 0.0 for k in kinds}
    found: dict[str, np.ndarray] = {k: np.zeros((cfg.epochs, len(combos), 2, len(TOP_K))) for k in kinds}
    losses = np.zeros(cfg.epochs)
    total_epochs = (len(folds) + 1) * cfg.epochs
    done = 0

    for fit, seen, new in folds:
        scorers = {k: _Scorer(queries, corpus, positives, idx, queries[fit])
                   for k, idx in (("seen", seen), ("new", new)) if len(idx)}
        for k, sc in scorers.items():
            base[k] = base[k] + sc.base if isinstance(base[k], np.ndarray) else sc.base.copy()

        def on_epoch(epoch: int, loss: float, model: QueryAdapter) -> None:
            nonlocal done
            weights = model.to_arrays()
            for k, sc in scorers.items():
                grid = sc.grid(weights, cfg.alphas, cfg.gates)
                found[k][epoch - 1, :, :, :len(sc.ks)] += np.array([grid[c] for c in combos])
            losses[epoch - 1] += loss / len(folds)
            done += 1
            progress(done / total_epochs, {"epoch": epoch, "loss": loss})
            if should_stop():
                raise Cancelled()

        _fit(queries, corpus, positives, grades, negatives, fit, cfg, cfg.epochs, on_epoch)

    ks = [k for k in TOP_K if k <= len(corpus)]
    recall = {k: found[k][:, :, 0, :len(ks)] / n_kind[k] for k in kinds}
    base_recall = {k: base[k] / n_kind[k] for k in kinds}
    # "New" questions are the ones a layer can hurt unseen, so they must not even look like dropping; "seen" ones
    # must simply not drop on average.
    ok = np.all([_not_worse(recall[k], found[k][:, :, 1, :len(ks)] / n_kind[k], base_recall[k], n_kind[k],
                            cfg.confidence if k == "new" else 0.0) for k in kinds], axis=0)
    # Among settings not worse at any k on either kind, the largest gain in recall@1 + recall@10 (both kinds).
    i1, i10 = ks.index(1), ks.index(10) if 10 in ks else len(ks) - 1
    gain = sum(recall[k][:, :, i1] + recall[k][:, :, i10] - base_recall[k][i1] - base_recall[k][i10] for k in kinds)
    gain = np.where(ok, gain, -np.inf)
    epoch_i, combo_i = np.unravel_index(int(np.argmax(gain)), gain.shape)
    as_dict = lambda arr: {f"recall@{k}": float(v) for k, v in zip(ks, arr)}  # noqa: E731
    history = [{"epoch": e + 1, "loss": float(losses[e]),
                **{f"val_{k}_recall@10": float(recall[k][e, :, i10].max()) for k in kinds}} for e in range(cfg.epochs)]
    validation = {"folds": len(folds), "n": n_kind, "base": {k: as_dict(base_recall[k]) for k in kinds}}
    if not gain[epoch_i, combo_i] > 1e-9:
        progress(1.0, history[-1])
        validation["model"] = validation["base"]
        return TrainResult(QueryAdapter(corpus.shape[1], cfg.hidden).to_arrays(), 0.0, None, 0, history, validation,
                           True, "No setting beat plain search on held-out questions without losing at some k; "
                           "kept the identity (deep memory = plain search).")
    alpha, tau = combos[combo_i]
    epochs = int(epoch_i) + 1
    validation["model"] = {k: as_dict(recall[k][epoch_i, combo_i]) for k in kinds}

    def on_refit(epoch: int, loss: float, model: QueryAdapter) -> None:
        progress((len(folds) * cfg.epochs + epoch) / total_epochs, {"epoch": epoch, "loss": loss})
        if should_stop():
            raise Cancelled()

    final = _fit(queries, corpus, positives, grades, negatives, np.arange(len(positives)), cfg, epochs, on_refit)
    progress(1.0, history[-1])
    gate_text = "no gate" if tau is None else f"gate from similarity {tau:.1f} to a training question (width {GATE_WIDTH})"
    return TrainResult(final.to_arrays(), float(alpha), tau, epochs, history, validation, False,
                       f"Chose {epochs} epochs, alpha={alpha:.1f} and {gate_text} by {len(folds)}-fold grouped "
                       f"cross-validation, then trained on all {len(positives)} questions.")
