"""Training the query adapter's layer, and the job that chooses where the adapter acts (see
:mod:`dmhelpers.deep_memory.selection` for the rule) and trains it on all questions.

Cost: time and memory grow with questions and chunks, not with (question, chunk) pairs. Peak memory is about
``4 bytes * (2 * N * d + 3 * n * d + 7 * s * (depth + T) + 8 * b * P)`` plus a few hundred MB of libraries, for ``N``
chunks of dimension ``d``, ``n`` questions, ``s <= 2 * max_scored`` scored held-out questions, ``T`` chunks labelled
in training, and a training batch of ``b`` questions over a pool of ``P <= N`` chunks (:func:`estimate_peak_bytes`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dmhelpers.deep_memory.adapter import CLOSED, QueryAdapter
from dmhelpers.deep_memory.insertion import calibrate, describe, evidence
from dmhelpers.deep_memory.config import TrainConfig, TrainResult
from dmhelpers.deep_memory.selection import SCORE_BATCH, CrossValidation, Search


class Cancelled(Exception):
    """Raised inside training when its job is cancelled."""


def mine_negatives(search: Search, corpus: np.ndarray, vectors: np.ndarray, positives: list[list[int]], n: int,
                   threshold: float) -> list[list[int]]:
    """Hard negatives: top results of plain search that are not labelled relevant, minus near-duplicates of a
    positive (likely unlabelled positives), from one batched index query."""
    labels = search(vectors, n + max(len(p) for p in positives))
    out = []
    for row, pos in zip(labels, positives):
        cand = row[~np.isin(row, pos)]
        if len(cand):
            dup = (corpus[cand] @ corpus[pos].T).max(axis=1) > threshold
            cand = cand[~dup]
        out.append(cand[:n].tolist())
    return out


def near_duplicates(corpus: np.ndarray, rows: np.ndarray, search: Search, threshold: float, k: int = 16
                    ) -> dict[int, np.ndarray]:
    """For each chunk row in ``rows``, the other chunks at least ``threshold`` similar to it (likely positives)."""
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(rows), 1024):
        part = rows[start:start + 1024]
        top = search(corpus[part], min(k, len(corpus)))
        sims = np.einsum("nd,nkd->nk", corpus[part], corpus[top])
        for r, t, s in zip(part, top, sims):
            out[int(r)] = t[(s > threshold) & (t != r)]
    return out


class Trainer:
    """One adapter and its optimizer, trained an epoch at a time on questions ``idx``.

    The loss is a softmax cross-entropy of each question against its relevant chunks (weighted by their
    grades) versus a pool shared by the batch: the other questions' positives (in-batch negatives) and every
    question's hard negatives. Pool entries nearly identical to one of a question's positives are masked for
    that question: they are likely unlabelled positives, not negatives.
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                 negatives: list[list[int]], duplicates: dict[int, np.ndarray], idx: np.ndarray, cfg: TrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.cfg, self.idx = cfg, idx
        self.model = QueryAdapter(corpus.shape[1], cfg.hidden)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.queries, self.corpus = torch.from_numpy(queries), torch.from_numpy(corpus)
        self.cand = [np.concatenate([np.asarray(p, dtype=int), np.asarray(n, dtype=int)])
                     for p, n in zip(positives, negatives)]
        self.positives = [np.asarray(p, dtype=int) for p in positives]
        self.weight = [np.asarray(g, dtype=np.float32) / np.float32(np.sum(g)) for g in grades]
        self.trained = (np.unique(np.concatenate([self.positives[i] for i in idx])) if cfg.negatives == "trained"
                        and len(idx) else None)
        empty = np.zeros(0, dtype=int)
        self.near = [np.unique(np.concatenate([duplicates.get(p, empty) for p in pos] + [empty])) for pos in positives]

    def epoch(self) -> float:
        """One pass over the questions in shuffled batches; returns the mean loss."""
        cfg, order = self.cfg, self.rng.permutation(self.idx)
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            pool = self.trained if self.trained is not None else np.unique(np.concatenate([self.cand[i] for i in batch]))
            target = np.zeros((len(batch), len(pool)), dtype=np.float32)
            rows = np.concatenate([np.full(len(self.positives[i]), r) for r, i in enumerate(batch)])
            target[rows, np.searchsorted(pool, np.concatenate([self.positives[i] for i in batch]))] = \
                np.concatenate([self.weight[i] for i in batch])
            mask = np.zeros((len(batch), len(pool)), dtype=bool)
            near = [self.near[i] for i in batch]
            if any(len(x) for x in near):
                rows = np.concatenate([np.full(len(x), r) for r, x in enumerate(near)])
                near_all = np.concatenate(near)
                col = np.minimum(np.searchsorted(pool, near_all), len(pool) - 1)
                inside = pool[col] == near_all
                mask[rows[inside], col[inside]] = True
                mask &= target == 0
            logits = self.model(self.queries[batch]) @ self.corpus[pool].T / cfg.temperature
            if mask.any():  # far below any real logit: exp() of it is 0, and 0 * it is 0 (not NaN, as with -inf)
                logits = logits.masked_fill(torch.from_numpy(mask), -1e4)
            loss = (torch.logsumexp(logits, dim=1) - (torch.from_numpy(target) * logits).sum(dim=1)).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total, batches = total + loss.item(), batches + 1
        return total / max(batches, 1)


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


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the memory the kernel reports available and what is
    left under a cgroup (container) limit; None where neither can be read."""
    found = []
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current", encoding="ascii").read())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def estimate_peak_bytes(n_questions: int, n_chunks: int, n_pairs: int, dim: int, cfg: TrainConfig) -> int:
    """Memory a job needs beyond the libraries, from the sizes in the module docstring (an upper estimate)."""
    trained = min(n_chunks, n_pairs)
    scored = min(n_questions, 2 * cfg.max_scored)
    pool = min(n_chunks, cfg.batch_size * (cfg.hard_negatives + max(1, n_pairs // max(n_questions, 1)) * 4))
    return 4 * (2 * n_chunks * dim + 3 * n_questions * dim + 7 * scored * (cfg.depth + trained)
                + SCORE_BATCH * cfg.depth * dim + 8 * cfg.batch_size * pool + 2 * pool * dim) + 16 * n_pairs


def train_adapter(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                  negatives: list[list[int]], cfg: TrainConfig, search: Search,
                  progress: Callable[[float, dict[str, float]], None] = lambda p, h: None,
                  should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Choose the gate, the strengths and the epochs by grouped cross-validation, then train on all questions.

    Args:
        queries: question embeddings ``(n, d)``, normalised.
        corpus: chunk embeddings ``(N, d)``, normalised (the store's, unchanged).
        positives, grades: per question, relevant chunk rows and their scores in (0, 1].
        negatives: per question, hard negatives (:func:`mine_negatives`).
        search: the store's nearest-neighbour search (for the held-out questions' candidates).
        progress: called with (share done, history row) after each epoch.
        should_stop: polled after each epoch; True cancels (raises :class:`Cancelled`).
    """
    trained = np.unique(np.concatenate([np.asarray(p, dtype=int) for p in positives]))
    duplicates = near_duplicates(corpus, trained, search, cfg.duplicate_threshold)
    cv = CrossValidation(queries, corpus, positives, grades, cfg, search, trained)
    trainers = [Trainer(queries, corpus, positives, grades, negatives, duplicates, fit, cfg) for fit in cv.fits]
    results = [cv.evaluate([t.model.to_arrays() for t in trainers])]  # epoch 0: the layer is zero, the memory acts
    losses = [float("nan")]
    units = (len(cv.fits) + 1) * cfg.epochs
    best_epoch = 0
    for epoch in range(1, cfg.epochs + 1 if cv.needs_layer else 1):  # all folds in lockstep
        losses.append(float(np.mean([t.epoch() for t in trainers])))
        results.append(cv.evaluate([t.model.to_arrays() for t in trainers]))
        choice = cv.choose(results)
        if choice is not None and choice[0] == epoch:
            best_epoch = epoch
        progress(epoch * len(cv.fits) / units, {"epoch": epoch, "loss": losses[-1]})
        if should_stop():
            raise Cancelled()
        if epoch - max(best_epoch, 1) >= cfg.patience:
            break

    folds = [(fit, {kind: (h.idx, h.top) for kind, h in held.items()}) for fit, held in zip(cv.fits, cv.held)]
    slots, inserted = calibrate(evidence(queries, positives, grades, folds, cv.ks), tuple(cfg.floors))
    insertion = (f"the memory puts a remembered chunk at {describe(slots)}" if slots else
                 "the memory stays off: no threshold helped held-out seen-chunk questions without costing a "
                 "held-out new-chunk one")
    choice = cv.choose(results)
    rej = cv.best_rejected(results, choice)
    history, validation = cv.curve(results, losses, choice, rej), cv.validation(results, choice, rej)
    if choice is None:
        progress(1.0, history[-1])
        return TrainResult(QueryAdapter(corpus.shape[1], cfg.hidden).to_arrays(), 0.0, CLOSED, 0.0, 0, history, 0.0,
                           validation, not slots, "memory" if slots else "",
                           (f"Kept plain search: nothing was shown to help held-out training questions without "
                            f"making some worse; {insertion}." if not slots else
                            f"{insertion[0].upper()}{insertion[1:]}; the layer is off: "
                            f"{rej[2] if rej else 'it did not help held-out training questions'}."), slots, inserted)
    epochs, (alpha_out, alpha, beta) = choice[0], cv.combos[choice[1]]
    final = Trainer(queries, corpus, positives, grades, negatives, duplicates, np.arange(len(positives)), cfg)
    for epoch in range(1, epochs + 1 if (alpha or alpha_out) else 1):  # a memory-only model needs no trained layer
        loss = final.epoch()
        progress((len(cv.fits) * cfg.epochs + epoch) / units, {"epoch": epoch, "loss": loss})
        if should_stop():
            raise Cancelled()
    progress(1.0, history[-1])
    parts = [p for p, on in (("memory", beta), ("layer", alpha)) if on]
    carried = " and ".join(parts) + " behind the gate" if parts else ""
    if alpha_out:
        carried = (carried + ", " if carried else "") + ("layer outside the gate" if cv.tau < CLOSED else "layer")
    if slots:
        carried = ("memory and " + carried) if carried else "memory"
    layer_epochs = epochs if (alpha or alpha_out) else 0
    gate_text = f"; {cv.gate_text()}" if cv.tau < CLOSED else ""
    return TrainResult(final.model.to_arrays(), float(alpha), cv.tau, float(beta),
                       layer_epochs, history, float(alpha_out), validation, False, carried,
                       f"Chose the layer at strength {alpha:.1f} behind the gate and {alpha_out:.2f} outside it, after "
                       f"{layer_epochs} epochs{gate_text}; "
                       f"{insertion}. Chosen on held-out questions of {len(cv.fits)} of {cfg.folds} grouped "
                       f"cross-validation folds, then trained on all {len(positives)} questions.", slots, inserted)
