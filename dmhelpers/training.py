"""Training the query adapter from (question, relevant chunks) pairs, and an honest choice of where it acts.

A query-side layer learns two things: *which chunks people ask about* (what helps the next question about a chunk
asked about in training: "seen") and a better question-to-text match in general (what could help a question about
a chunk nobody asked about: "new"). The first is easy to learn and, applied to every question, hurts the second.
So the model is split by a gate (see :mod:`dmhelpers.adapter`)::

    q' = normalise(q + g(q) * (alpha * f(q) + beta * m(q)) + (1 - g(q)) * alpha_out * f(q))

The gate ``g`` opens only for questions very close to a training question. Grouped cross-validation over the
training questions holds out questions about chunks that stay in training ("seen") and whole chunks ("new"), and
chooses, in this order:

1. **The gate** ``tau`` protects new-chunk questions. No held-out new-chunk question may open it, and a new one
   should open it with probability at most ``risk``: an exponential tail fitted to the largest similarities of
   held-out new-chunk questions to training questions says how far above the largest one seen that is. Fewer held-out
   questions mean a wider margin; with fewer than ``MIN_NEW`` of them the gate stays closed.
2. **Outside the gate** (every question it does not open for) the layer acts with ``alpha_out`` only if it is shown
   to help held-out new-chunk questions at every k: those it improves must outnumber those it worsens by ``z``
   standard deviations of a coin flip (a sign test). Otherwise ``alpha_out = 0``: plain search.
3. **Behind the gate** the strengths ``alpha`` (layer) and ``beta`` (memory) and the number of epochs are chosen on
   held-out seen-chunk questions, for the largest gain that is not worse than plain search at any k.

Only held-out questions count: a setting has to earn its place on questions it was not trained on. If nothing
qualifies, the job keeps plain search and says so. The final layer is trained on all training questions.

Cost: time and memory grow with questions and chunks, not with (question, chunk) pairs. Peak memory is about
``4 bytes * (2 * N * d + 3 * n * d + 7 * s * (depth + T) + 8 * b * P)`` plus a few hundred MB of libraries, for ``N``
chunks of dimension ``d``, ``n`` questions, ``s <= 2 * max_scored`` scored held-out questions, ``T`` chunks labelled
in training, and a training batch of ``b`` questions over a pool of ``P <= N`` chunks (:func:`estimate_peak_bytes`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dmhelpers.adapter import CLOSED, GATE_WIDTH, QueryAdapter, adapter_delta, gate, memory, memory_values
from dmhelpers.metrics import TOP_K

Search = Callable[[np.ndarray, int], np.ndarray]  # (query vectors, k) -> row positions of the k nearest chunks

MIN_HELD_OUT = 20  # fewer held-out questions than this cannot tell where the gate is safe: it stays closed
SCORE_BATCH = 256  # held-out questions scored at a time


@dataclass
class TrainConfig:
    """Knobs of one training job (the defaults train in seconds on 2 CPU cores)."""

    epochs: int = 30  # the most epochs; cross-validation picks the number
    learning_rate: float = 3e-3
    batch_size: int = 64
    hidden: int = 0  # 0: linear residual layer; > 0: an MLP with this many hidden units
    temperature: float = 0.05
    hard_negatives: int = 30
    negatives: str = "hard"  # "hard": in-batch and hard negatives; "trained": every chunk labelled in training
    duplicate_threshold: float = 0.95  # a "negative" this similar to a positive is treated as a likely positive
    folds: int = 4  # grouped cross-validation folds
    patience: int = 5  # stop when the best held-out setting has not improved for this many epochs
    depth: int = 128  # held-out ranks are exact within each question's plain top ``depth`` and the trained chunks
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)  # strengths of the layer behind the gate
    betas: tuple[float, ...] = (0.0, 0.5, 1.0)  # strengths of the memory behind the gate
    alphas_out: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)  # strengths of the layer outside the gate
    risk: float = 1e-3  # the chance a question about a new chunk may open the gate
    z: float = 3.0  # outside the gate: improved minus worsened held-out questions, in coin-flip standard deviations
    max_scored: int = 1000  # held-out questions of each kind scored per epoch (a seeded sample of the rest)
    seed: int = 0


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    alpha: float
    gate: float
    beta: float
    epochs: int
    history: list[dict[str, float]]
    alpha_out: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)
    kept_identity: bool = False
    carried_by: str = ""  # which part carries the gain; "" when plain search is kept
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
        held = np.zeros(len(positives), dtype=bool)
        held[new + seen] = True
        out.append((np.flatnonzero(~held), np.array(seen, dtype=int), np.array(new, dtype=int)))
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


class _Trainer:
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


class _HeldOut:
    """Held-out questions of one kind in one fold: what each setting does to the ranks of their relevant chunks.

    Candidates per question are its plain top ``depth`` (so plain-search ranks are exact) and every chunk labelled
    relevant in training (what a learned prior pulls up); a chunk outside both that a setting lifts into the top
    100 is not counted, which at worst flatters a setting on a rare question. A ranking does not change when a
    query vector is rescaled, so the scores of a setting are ``S0 + c * (f(q) . e) + h * (m(q) . e)``, with
    ``c = g * alpha + (1 - g) * alpha_out`` and ``h = g * beta``: comparisons of precomputed scores, one row per
    question (never one per relevant chunk), in batches of ``SCORE_BATCH``.
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                 idx: np.ndarray, references: np.ndarray, values: np.ndarray, trained: np.ndarray, search: Search,
                 depth: int) -> None:
        self.idx, self.corpus, self.trained = idx, corpus, trained
        self.trained_vecs = corpus[trained]
        self.ks = np.array([k for k in TOP_K if k <= len(corpus)])
        self.queries = queries[idx]
        sim = self.queries @ references.T
        self.similarity = sim.max(axis=1) if len(references) else np.full(len(idx), -1.0, dtype=np.float32)
        slot = np.full(len(corpus), -1)
        slot[trained] = np.arange(len(trained))
        width = max(len(positives[i]) for i in idx) if len(idx) else 1
        self.pos = np.zeros((len(idx), width), dtype=int)  # positions of relevant chunks among the trained columns
        self.share = np.zeros((len(idx), width), dtype=np.float32)  # their grades, summing to 1 per question
        for r, i in enumerate(idx):
            self.pos[r, :len(positives[i])] = slot[positives[i]]
            self.share[r, :len(positives[i])] = np.asarray(grades[i]) / np.sum(grades[i])
        self.top = search(self.queries, min(depth, len(corpus))) if len(idx) else np.zeros((0, 1), dtype=int)
        self.top_out = slot[self.top] >= 0  # a trained chunk among the top is scored once, as a trained column
        top, trained_scores = self._scores(self.queries)
        self.base_scores = (np.where(self.top_out, -np.inf, top).astype(np.float32), trained_scores)
        self.memory_scores = (self._scores(memory(self.queries, references, values, sim)) if len(references)
                              else tuple(np.zeros_like(a) for a in self.base_scores))
        self.base = self.recall(self.base_scores)

    def __len__(self) -> int:
        return len(self.idx)

    def _scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``vectors . e`` for each question's top candidates and for the trained chunks."""
        top = np.empty(self.top.shape, dtype=np.float32)
        for s in range(0, len(vectors), SCORE_BATCH):
            part = slice(s, s + SCORE_BATCH)
            top[part] = np.einsum("nd,nkd->nk", vectors[part], self.corpus[self.top[part]])
        return top, (vectors @ self.trained_vecs.T).astype(np.float32)

    def recall(self, scores: tuple[np.ndarray, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """Per question and k, the grade-weighted share of its relevant chunks in its top k; ``scores`` are those
        of the questions ``rows`` (all when None)."""
        rows = np.arange(len(self)) if rows is None else rows
        out = np.zeros((len(rows), len(self.ks)), dtype=np.float32)
        kmax = int(self.ks.max())
        for s in range(0, len(rows), SCORE_BATCH):
            part, r = slice(s, s + SCORE_BATCH), rows[s:s + SCORE_BATCH]
            row = np.concatenate([scores[0][part], scores[1][part]], axis=1)
            cut = row.shape[1] - min(kmax, row.shape[1])
            best = -np.sort(-np.partition(row, cut, axis=1)[:, cut:], axis=1)
            kth = best[:, np.minimum(self.ks, best.shape[1]) - 1]  # (rows, ks): the k-th best score
            pos = np.take_along_axis(scores[1][part], self.pos[r], axis=1)
            out[part] = np.einsum("np,npk->nk", self.share[r], (pos[:, :, None] >= kth[:, None, :]))
        return out

    def setting(self, delta: tuple[np.ndarray, np.ndarray], c: np.ndarray, h: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Recall per question of ``rows`` and k for scores ``S0 + c * D + h * M`` (``c``, ``h`` per row)."""
        scores = tuple(b[rows] + c[:, None] * d[rows] + h[:, None] * m[rows]
                       for b, d, m in zip(self.base_scores, delta, self.memory_scores))
        return self.recall(scores, rows)


def unrelated_similarity(queries: np.ndarray, positives: list[list[int]], held: np.ndarray, fit: np.ndarray
                         ) -> np.ndarray:
    """Per held-out question, its highest similarity to a ``fit`` question that shares none of its relevant chunks
    (-1 when there is none): how close a question comes to one about other chunks, which the gate must not
    mistake for a repeat."""
    by_chunk: dict[int, list[int]] = {}
    for j, i in enumerate(fit):
        for c in positives[i]:
            by_chunk.setdefault(c, []).append(j)
    out = np.full(len(held), -1.0, dtype=np.float32)
    for s in range(0, len(held), 1024):
        part = held[s:s + 1024]
        sim = queries[part] @ queries[fit].T
        for r, i in enumerate(part):
            related = {j for c in positives[i] for j in by_chunk.get(c, ())}
            sim[r, list(related)] = -1.0
        if sim.shape[1]:
            out[s:s + len(part)] = sim.max(axis=1)
    return out


def safe_gate(similarities: np.ndarray, risk: float, references: float = 1.0) -> float:
    """The smallest ``tau`` that a question about other chunks than any training question's exceeds with
    probability at most ``risk``.

    ``similarities`` are held-out questions' highest similarities to a training question about other chunks
    (:func:`unrelated_similarity`). Past the ``m`` largest, the tail is taken as exponential (peaks over
    threshold, the usual way to extrapolate beyond the largest value seen) with the 95 % upper confidence bound of
    its scale, so fewer held-out questions give a wider margin; ``references`` is how many times more training
    questions a new question will be compared with than in the folds (more chances to find a close one). Never
    below the largest similarity seen; :data:`~dmhelpers.adapter.CLOSED` with fewer than :data:`MIN_HELD_OUT`.
    """
    s = np.sort(np.asarray(similarities, dtype=np.float64))[::-1]
    n = len(s)
    if n < MIN_HELD_OUT:
        return CLOSED
    m = max(5, int(np.sqrt(n)))
    k = 2 * m  # 2 * m * mean excess / scale follows a chi-square law with 2m degrees of freedom
    chi2_low = k * (1 - 2 / (9 * k) - 1.645 * np.sqrt(2 / (9 * k))) ** 3  # its 5 % quantile (Wilson-Hilferty)
    scale = float(np.mean(s[:m] - s[m])) * k / chi2_low
    tau = s[m] + scale * np.log(m / (n * risk / references))
    return float(min(max(tau, s[0]), CLOSED))


def sign_test(gained: np.ndarray, lost: np.ndarray, z: float) -> bool:
    """True when a setting is shown to help at every k: where it changes anything, the questions it improved
    outnumber those it worsened by ``z`` standard deviations of a fair coin (``gained - lost >= z * sqrt(gained +
    lost)``); a setting that changes nothing is not shown to help."""
    changed = gained + lost
    return bool(changed.sum() > 0 and np.all((gained - lost >= z * np.sqrt(changed)) | (changed == 0)))


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


def _choose(results: list[dict[str, np.ndarray]], combos: list[tuple[float, float, float]], n: dict[str, int],
            z: float) -> tuple[int, int] | None:
    """(epoch index, combo) with the largest held-out gain among settings that qualify, or None.

    A setting qualifies when it is not worse than plain search at any k on seen-chunk questions, and leaves
    new-chunk questions as plain search ranks them (``alpha_out = 0``: the gate is shut to them) or passes the
    sign test on them. The gain is the recall gained over all held-out questions, averaged over k; on new-chunk
    questions, improved minus worsened minus the sign test's margin.
    """
    best, where = 1e-9, None
    for e, res in enumerate(results):
        for c in range(len(combos)):
            ok, gain = True, 0.0
            if "new" in res:
                gained, lost = res["new_gained"][c], res["new_lost"][c]
                if combos[c][0]:  # counted at its lower bound, so a cleaner setting beats a noisier one
                    ok, gain = sign_test(gained, lost, z), float(np.mean(gained - lost - z * np.sqrt(gained + lost)))
                else:
                    ok = not lost.any()
            if "seen" in res:
                ok = ok and bool(np.all(res["seen"][c] >= -1e-9))
                gain += float(res["seen"][c].mean()) * n["seen"]
            if ok and gain > best:
                best, where = gain, (e, c)
    return where


def train_adapter(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]],
                  negatives: list[list[int]], cfg: TrainConfig, search: Search,
                  progress: Callable[[float, dict[str, float]], None] = lambda p, h: None,
                  should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Choose the gate, the strengths and the epochs by grouped cross-validation, then train on all questions.

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
    trained = np.unique(np.concatenate([np.asarray(p, dtype=int) for p in positives]))
    duplicates = near_duplicates(corpus, trained, search, cfg.duplicate_threshold)

    # The gate: how close held-out questions come to a training question about other chunks.
    kinds_idx: dict[str, list[np.ndarray]] = {"seen": [], "new": []}
    unrelated = []
    for fit, seen, new in folds:
        held = np.concatenate([seen, new]).astype(int)
        labelled = np.zeros(len(corpus), dtype=bool)
        labelled[[c for i in fit for c in positives[i]]] = True
        is_new = np.array([not labelled[positives[i]].any() for i in held], dtype=bool)
        kinds_idx["seen"].append(held[~is_new])
        kinds_idx["new"].append(held[is_new])
        unrelated.append(unrelated_similarity(queries, positives, held, fit))
    unrelated_sims = np.concatenate(unrelated) if unrelated else np.zeros(0)
    n_fit = np.mean([len(fit) for fit, _, _ in folds])
    tau = safe_gate(unrelated_sims, cfg.risk, len(positives) / max(n_fit, 1.0))

    # Train only as many fold models as it takes to hold out max_scored questions of each kind (all, for small sets).
    used = next((f for f in range(1, len(folds) + 1) if all(sum(len(p) for p in parts[:f]) >= cfg.max_scored
                                                               for parts in kinds_idx.values() if any(map(len, parts)))),
                len(folds))
    folds = folds[:used]
    kinds_idx = {kind: parts[:used] for kind, parts in kinds_idx.items()}
    for kind, parts in kinds_idx.items():  # score at most max_scored held-out questions of each kind (a sample)
        sizes = np.cumsum([0] + [len(p) for p in parts])
        if sizes[-1] > cfg.max_scored:
            keep = np.sort(rng.choice(sizes[-1], cfg.max_scored, replace=False))
            flat = np.concatenate(parts)
            kinds_idx[kind] = [flat[keep[(keep >= a) & (keep < b)]] for a, b in zip(sizes[:-1], sizes[1:])]
    runs = []
    for f, (fit, _, _) in enumerate(folds):
        values = memory_values(corpus, [positives[i] for i in fit], [grades[i] for i in fit])
        held = {kind: _HeldOut(queries, corpus, positives, grades, kinds_idx[kind][f], queries[fit], values, trained,
                               search, cfg.depth) for kind in ("seen", "new") if len(kinds_idx[kind][f])}
        runs.append((fit, held))
    kinds = [k for k in ("seen", "new") if any(k in h for _, h in runs)]
    n_kind = {k: sum(len(h[k]) for _, h in runs if k in h) for k in kinds}
    gates = {k: np.concatenate([gate(h[k].similarity, tau) for _, h in runs if k in h]) for k in kinds}
    opened = {k: int((gates[k] > 0).sum()) for k in kinds}
    inside = opened.get("seen", 0) > 0  # nothing to learn behind a gate no held-out seen question opens
    combos = [(ao, a, b) for ao in cfg.alphas_out for a in (cfg.alphas if inside else (0.0,))
              for b in (cfg.betas if inside else (0.0,))]
    needs_layer = any(ao or a for ao, a, _ in combos)
    trainers = [_Trainer(queries, corpus, positives, grades, negatives, duplicates, fit, cfg) for fit, _ in runs]
    ks = [k for k in TOP_K if k <= len(corpus)]

    def evaluate() -> dict[str, np.ndarray]:
        """Per kind, per combo: mean recall change per k vs plain search, and questions gained / lost per k."""
        out: dict[str, Any] = {}
        for kind in kinds:
            change = np.zeros((len(combos), len(ks)))
            gained = np.zeros((len(combos), len(ks)))
            lost = np.zeros((len(combos), len(ks)))
            for trainer, (_, held) in zip(trainers, runs):
                if kind not in held:
                    continue
                h = held[kind]
                weights = trainer.model.to_arrays()
                delta = h._scores(adapter_delta(weights, h.queries)) if needs_layer else \
                    tuple(np.zeros_like(a) for a in h.base_scores)
                g = gate(h.similarity, tau)
                diffs = np.zeros((len(combos), len(h), len(ks)), dtype=np.float32)
                # Questions the gate shuts depend on alpha_out only, those it fully opens on (alpha, beta) only.
                for group, key in ((g == 0, lambda ao, a, b: ao), (g == 1, lambda ao, a, b: (a, b)),
                                   ((g > 0) & (g < 1), lambda ao, a, b: (ao, a, b))):
                    rows = np.flatnonzero(group)
                    if not len(rows):
                        continue
                    done: dict[Any, np.ndarray] = {}
                    gr = g[rows]
                    for c, (ao, a, b) in enumerate(combos):
                        if key(ao, a, b) not in done:
                            done[key(ao, a, b)] = h.setting(delta, gr * a + (1 - gr) * ao, gr * b, rows) - h.base[rows]
                        diffs[c, rows] = done[key(ao, a, b)]
                change += diffs.sum(axis=1)
                gained += (diffs > 1e-6).sum(axis=1)
                lost += (diffs < -1e-6).sum(axis=1)
            out[kind], out[f"{kind}_gained"], out[f"{kind}_lost"] = change / n_kind[kind], gained, lost
        return out

    results = [evaluate()]  # epoch 0: the layer is still zero, so only the memory acts
    losses = [float("nan")]
    units = (len(folds) + 1) * cfg.epochs
    best_epoch = 0
    for epoch in range(1, cfg.epochs + 1 if needs_layer else 1):  # all folds in lockstep
        losses.append(float(np.mean([t.epoch() for t in trainers])))
        results.append(evaluate())
        choice = _choose(results, combos, n_kind, cfg.z)
        if choice is not None and choice[0] == epoch:
            best_epoch = epoch
        progress(epoch * len(folds) / units, {"epoch": epoch, "loss": losses[-1]})
        if should_stop():
            raise Cancelled()
        if epoch - max(best_epoch, 1) >= cfg.patience:
            break

    choice = _choose(results, combos, n_kind, cfg.z)
    base = {k: np.concatenate([h[k].base for _, h in runs if k in h]).mean(axis=0) for k in kinds}
    as_dict = lambda arr: {f"recall@{k}": float(v) for k, v in zip(ks, arr)}  # noqa: E731
    chosen = (0, combos.index((0.0, 0.0, 0.0))) if choice is None else choice
    history = [{"epoch": e, "loss": losses[e], **{f"val_{k}_recall@10": float(base[k][ks.index(10) if 10 in ks else -1]
                                                                          + res[k][chosen[1]][ks.index(10) if 10 in ks else -1])
                                                   for k in kinds}}
               for e, res in enumerate(results)]
    validation = {"folds": len(folds), "n": n_kind, "base": {k: as_dict(base[k]) for k in kinds},
                  "model": {k: as_dict(base[k] + results[chosen[0]][k][chosen[1]]) for k in kinds},
                  "gate": {"tau": tau, "risk": cfg.risk, "held_out": len(unrelated_sims),
                           "largest_unrelated_similarity": float(unrelated_sims.max()) if len(unrelated_sims) else None,
                           "opened": opened}}
    closest = f"{unrelated_sims.max():.2f}" if len(unrelated_sims) else "-"
    if len(unrelated_sims) < MIN_HELD_OUT:
        gate_text = (f"the gate stays closed: {len(unrelated_sims)} held-out questions (fewer than {MIN_HELD_OUT}) "
                     "cannot tell where it would be safe")
    elif tau >= CLOSED:
        gate_text = (f"the gate stays closed: held-out questions about other chunks came as close as {closest} to a "
                     f"training question, and no threshold keeps such questions out with probability "
                     f"{1 - cfg.risk:.1%} on this evidence")
    else:
        gate_text = (f"the gate opens above similarity {tau:.2f} to a training question (held-out questions about "
                     f"other chunks came as close as {closest}); {opened.get('seen', 0)} of "
                     f"{n_kind.get('seen', 0)} held-out seen-chunk questions pass it")
    if choice is None:
        progress(1.0, history[-1])
        return TrainResult(QueryAdapter(corpus.shape[1], cfg.hidden).to_arrays(), 0.0, tau, 0.0, 0, history, 0.0,
                           validation, True, "",
                           f"Kept plain search: nothing was shown to help held-out training questions without making "
                           f"some worse; {gate_text}.")
    epochs, (alpha_out, alpha, beta) = chosen[0], combos[chosen[1]]
    final = _Trainer(queries, corpus, positives, grades, negatives, duplicates, np.arange(len(positives)), cfg)
    for epoch in range(1, epochs + 1 if (alpha or alpha_out) else 1):  # a memory-only model needs no trained layer
        loss = final.epoch()
        progress((len(folds) * cfg.epochs + epoch) / units, {"epoch": epoch, "loss": loss})
        if should_stop():
            raise Cancelled()
    progress(1.0, history[-1])
    parts = [p for p, on in (("memory", beta), ("layer", alpha)) if on]
    carried = " and ".join(parts) + " behind the gate" if parts else ""
    if alpha_out:
        carried = (carried + ", " if carried else "") + "layer outside the gate"
    layer_epochs = epochs if (alpha or alpha_out) else 0
    return TrainResult(final.model.to_arrays(), float(alpha), tau, float(beta), layer_epochs, history,
                       float(alpha_out), validation, False, carried,
                       f"Chose the {carried}: layer {alpha:.1f} and memory {beta:.1f} behind the gate, layer "
                       f"{alpha_out:.2f} outside it, {layer_epochs} epochs; {gate_text}. Chosen on held-out questions "
                       f"of {len(folds)} of {cfg.folds} grouped cross-validation folds, then trained on all "
                       f"{len(positives)} questions.")
