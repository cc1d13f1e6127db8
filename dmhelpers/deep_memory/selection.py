"""Where and how strongly the query adapter acts, chosen on held-out questions.

A query-side layer learns two things: *which chunks people ask about* (what helps the next question about a chunk
asked about in training: "seen") and a better question-to-text match in general (what could help a question about
a chunk nobody asked about: "new"). The first is easy to learn and, applied to every question, hurts the second.
So the model is split by a gate (see :mod:`dmhelpers.deep_memory.adapter`)::

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


Held-out questions are scored one row per question (:class:`HeldOut`), never one per (question, chunk) pair, so
memory and time grow with questions and chunks, not with how many chunks each question names.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dmhelpers.deep_memory.adapter import CLOSED, adapter_delta, gate, memory, memory_values
from dmhelpers.deep_memory.config import TrainConfig
from dmhelpers.evaluation.metrics import TOP_K

Search = Callable[[np.ndarray, int], np.ndarray]  # (query vectors, k) -> row positions of the k nearest chunks

MIN_HELD_OUT = 20  # fewer held-out questions than this cannot tell where the gate is safe: it stays closed
SCORE_BATCH = 256  # held-out questions scored at a time


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


class HeldOut:
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
        top, trained_scores = self.scores(self.queries)
        self.base_scores = (np.where(self.top_out, -np.inf, top).astype(np.float32), trained_scores)
        self.memory_scores = (self.scores(memory(self.queries, references, values, sim)) if len(references)
                              else tuple(np.zeros_like(a) for a in self.base_scores))
        self.base = self.recall(self.base_scores)

    def __len__(self) -> int:
        return len(self.idx)

    def scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    below the largest similarity seen; :data:`~dmhelpers.deep_memory.adapter.CLOSED` with fewer than :data:`MIN_HELD_OUT`.
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


def verdict(res: dict[str, np.ndarray], c: int, combos: list[tuple[float, float, float]], n: dict[str, int], z: float,
            ks: list[int]) -> tuple[float, str]:
    """The held-out gain of setting ``c`` in one epoch's ``res``, and why it does not qualify ("" when it does).

    A setting qualifies when it is not worse than plain search at any k on seen-chunk questions, and leaves
    new-chunk questions as plain search ranks them (``alpha_out = 0``: the gate is shut to them) or passes the
    sign test on them. The gain is the recall gained over all held-out questions, averaged over k; on new-chunk
    questions, improved minus worsened minus the sign test's margin, so a cleaner setting beats a noisier one.
    """
    gain, why = 0.0, ""
    if "new" in res:
        gained, lost = res["new_gained"][c], res["new_lost"][c]
        if combos[c][0]:
            gain = float(np.mean(gained - lost - z * np.sqrt(gained + lost)))
            if not sign_test(gained, lost, z):
                why = "its help on new-chunk questions was not clear of chance at every k"
        elif lost.any():
            why = f"it made new-chunk questions worse at k={ks[int(np.argmax(lost > 0))]}"
    if "seen" in res:
        gain += float(res["seen"][c].mean()) * n["seen"]
        worse = np.flatnonzero(res["seen"][c] < -1e-9)
        if len(worse) and not why:
            why = f"it made seen-chunk questions worse at k={ks[int(worse[0])]}"
    return gain, why


def choose(results: list[dict[str, np.ndarray]], combos: list[tuple[float, float, float]], n: dict[str, int],
           z: float, ks: list[int]) -> tuple[int, int] | None:
    """(epoch index, setting) with the largest held-out gain among settings that qualify (:func:`verdict`), or None."""
    best, where = 1e-9, None
    for e, res in enumerate(results):
        for c in range(len(combos)):
            gain, why = verdict(res, c, combos, n, z, ks)
            if not why and gain > best:
                best, where = gain, (e, c)
    return where


def rejected(results: list[dict[str, np.ndarray]], combos: list[tuple[float, float, float]], n: dict[str, int],
             z: float, ks: list[int], chosen: tuple[int, int] | None) -> tuple[int, int, str] | None:
    """The best setting that did not qualify, if it would have gained more than the chosen one: (epoch, setting,
    why it was rejected)."""
    floor = verdict(results[chosen[0]], chosen[1], combos, n, z, ks)[0] if chosen else 1e-9
    best, where = floor, None
    for e, res in enumerate(results):
        for c in range(len(combos)):
            gain, why = verdict(res, c, combos, n, z, ks)
            if why and gain > best:
                best, where = gain, (e, c, why)
    return where


class CrossValidation:
    """Grouped cross-validation for one job: the folds, the gate, the held-out questions of each kind and the
    settings ``(alpha_out, alpha, beta)`` to compare; :meth:`evaluate` scores fold models, :meth:`choose` picks.

    Only as many folds get a model as it takes to hold out ``max_scored`` questions of each kind (all of them for
    small sets), and at most ``max_scored`` held-out questions of each kind are scored (a seeded sample).
    """

    def __init__(self, queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]],
                 grades: list[list[float]], cfg: TrainConfig, search: Search, trained: np.ndarray) -> None:
        rng = np.random.default_rng(cfg.seed)
        self.cfg = cfg
        folds = make_folds(positives, cfg.folds, rng)
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
        self.unrelated = np.concatenate(unrelated) if unrelated else np.zeros(0)
        n_fit = np.mean([len(fit) for fit, _, _ in folds])
        self.tau = (safe_gate(self.unrelated, cfg.risk, len(positives) / max(n_fit, 1.0))
                    if any(cfg.alphas) or any(cfg.betas) else CLOSED)  # no gated part: nothing behind a gate

        used = next((f for f in range(1, len(folds) + 1) if all(sum(len(p) for p in parts[:f]) >= cfg.max_scored
                                                                   for parts in kinds_idx.values() if any(map(len, parts)))),
                    len(folds))
        self.fits = [fit for fit, _, _ in folds[:used]]
        kinds_idx = {kind: parts[:used] for kind, parts in kinds_idx.items()}
        for kind, parts in kinds_idx.items():
            sizes = np.cumsum([0] + [len(p) for p in parts])
            if sizes[-1] > cfg.max_scored:
                keep = np.sort(rng.choice(sizes[-1], cfg.max_scored, replace=False))
                flat = np.concatenate(parts)
                kinds_idx[kind] = [flat[keep[(keep >= a) & (keep < b)]] for a, b in zip(sizes[:-1], sizes[1:])]
        self.held: list[dict[str, HeldOut]] = []
        for f, fit in enumerate(self.fits):
            values = memory_values(corpus, [positives[i] for i in fit], [grades[i] for i in fit])
            self.held.append({kind: HeldOut(queries, corpus, positives, grades, kinds_idx[kind][f], queries[fit], values,
                                            trained, search, cfg.depth)
                              for kind in ("seen", "new") if len(kinds_idx[kind][f])})
        self.kinds = [k for k in ("seen", "new") if any(k in h for h in self.held)]
        self.n = {k: sum(len(h[k]) for h in self.held if k in h) for k in self.kinds}
        self.opened = {k: int(sum((gate(h[k].similarity, self.tau) > 0).sum() for h in self.held if k in h))
                       for k in self.kinds}
        inside = self.opened.get("seen", 0) > 0  # nothing to learn behind a gate no held-out seen question opens
        self.combos = [(ao, a, b) for ao in cfg.alphas_out for a in (cfg.alphas if inside else (0.0,))
                       for b in (cfg.betas if inside else (0.0,))]
        self.needs_layer = any(ao or a for ao, a, _ in self.combos)
        self.ks = [k for k in TOP_K if k <= len(corpus)]
        self.base = {k: np.concatenate([h[k].base for h in self.held if k in h]).mean(axis=0) for k in self.kinds}

    def evaluate(self, models: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per kind and setting, given each fold's layer weights: the mean recall change per k against plain
        search, and how many held-out questions gained or lost per k."""
        out: dict[str, Any] = {}
        combos, ks = self.combos, self.ks
        for kind in self.kinds:
            change, gained, lost = (np.zeros((len(combos), len(ks))) for _ in range(3))
            for weights, held in zip(models, self.held):
                if kind not in held:
                    continue
                h = held[kind]
                delta = h.scores(adapter_delta(weights, h.queries)) if self.needs_layer else \
                    tuple(np.zeros_like(a) for a in h.base_scores)
                g = gate(h.similarity, self.tau)
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
            out[kind], out[f"{kind}_gained"], out[f"{kind}_lost"] = change / self.n[kind], gained, lost
        return out

    def choose(self, results: list[dict[str, np.ndarray]]) -> tuple[int, int] | None:
        """(epoch, setting) with the largest qualifying held-out gain over ``results`` (one per epoch), or None."""
        return choose(results, self.combos, self.n, self.cfg.z, self.ks)

    def gate_text(self) -> str:
        """What the gate does, in a sentence for the job's message."""
        closest = f"{self.unrelated.max():.2f}" if len(self.unrelated) else "-"
        if len(self.unrelated) < MIN_HELD_OUT:
            return (f"the gate stays closed: {len(self.unrelated)} held-out questions (fewer than {MIN_HELD_OUT}) "
                    "cannot tell where it would be safe")
        if self.tau >= CLOSED:
            return (f"the gate stays closed: held-out questions about other chunks came as close as {closest} to a "
                    f"training question, and no threshold keeps such questions out with probability "
                    f"{1 - self.cfg.risk:.1%} on this evidence")
        return (f"the gate opens above similarity {self.tau:.2f} to a training question (held-out questions about "
                f"other chunks came as close as {closest}); {self.opened.get('seen', 0)} of {self.n.get('seen', 0)} "
                "held-out seen-chunk questions pass it")

    def best_rejected(self, results: list[dict[str, np.ndarray]], chosen: tuple[int, int] | None
                      ) -> tuple[int, int, str] | None:
        """The best setting that did not qualify, if it would have gained more than ``chosen``: (epoch, setting,
        why); what :meth:`validation` and :meth:`curve` show next to the chosen one."""
        return rejected(results, self.combos, self.n, self.cfg.z, self.ks, chosen)

    def validation(self, results: list[dict[str, np.ndarray]], chosen: tuple[int, int] | None,
                   rej: tuple[int, int, str] | None) -> dict[str, Any]:
        """The job record's ``validation``: held-out recall of plain search and of the chosen setting, the best
        rejected setting (``rej``, from :meth:`best_rejected`) and the gate."""
        as_dict = lambda arr: {f"recall@{k}": float(v) for k, v in zip(self.ks, arr)}  # noqa: E731
        model = {k: self.base[k] + (results[chosen[0]][k][chosen[1]] if chosen else 0.0) for k in self.kinds}
        return {"folds": len(self.fits), "n": self.n, "base": {k: as_dict(self.base[k]) for k in self.kinds},
                "model": {k: as_dict(model[k]) for k in self.kinds},
                "rejected": self.rejected_setting(rej),
                "gate": {"tau": self.tau, "risk": self.cfg.risk, "held_out": len(self.unrelated),
                         "largest_unrelated_similarity": float(self.unrelated.max()) if len(self.unrelated) else None,
                         "opened": self.opened}}

    def curve(self, results: list[dict[str, np.ndarray]], losses: list[float], chosen: tuple[int, int] | None,
              rej: tuple[int, int, str] | None) -> list[dict[str, float]]:
        """Per epoch: the training loss, the chosen setting's held-out recall@10 of each kind and, when a setting
        that did not qualify would have gained more (``rej``, from :meth:`best_rejected`), that one's
        (``rejected_...``)."""
        at = self.ks.index(10) if 10 in self.ks else -1
        rows = []
        for e, res in enumerate(results):
            row = {"epoch": e, "loss": losses[e]}
            for k in self.kinds:
                row[f"val_{k}_recall@10"] = float(self.base[k][at] + (res[k][chosen[1]][at] if chosen else 0.0))
                if rej:
                    row[f"rejected_{k}_recall@10"] = float(self.base[k][at] + res[k][rej[1]][at])
            rows.append(row)
        return rows

    def rejected_setting(self, rej: tuple[int, int, str] | None) -> dict[str, Any] | None:
        """The best rejected setting (from :meth:`best_rejected`) and why, for the job record."""
        if rej is None:
            return None
        alpha_out, alpha, beta = self.combos[rej[1]]
        return {"epoch": rej[0], "alpha": alpha, "beta": beta, "alpha_out": alpha_out, "why": rej[2]}
