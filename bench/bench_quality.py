"""Deep Memory quality over sizes and protocols and many seeds: plain search vs deep memory on test questions,
split into questions about chunks seen in training and about new chunks.

    .venv/bin/python bench/bench_quality.py [--seeds 0 1 ... 9] [--protocols workshop default tutorial]
                                            [--option NAME VALUE] [--no-reference] [--llm local]

Protocols (each: notebook 02's split, 200 questions, half for training, on a scratch copy of a store):

- ``workshop``: the workshop store (notebook 01 with ``PRESET = "workshop"``, 20 pages; ``data/workshop-store``,
  the folder ``make workshop`` writes, built on first use), 3 questions per sampled chunk;
- ``default``: the default store (``data/store``, notebook 01's defaults), 3 questions per chunk;
- ``tutorial``: the default store with the tutorial's protocol, 1 question per chunk, so every test question is
  about a chunk no training question was about.

Each run prints its job's choice and the test recall of each kind, plain -> deep memory, with '!' where deep
memory is below plain search. The summary counts the runs in which new-chunk questions lost anything at any k.

Reference: on the same split, a residual linear layer with no gate, trained with a softmax over every chunk for up
to 100 epochs, at the epoch where *its test* seen-chunk recall@10 is best (an upper reference, chosen with the test
set, not a model one could ship). It shows what the gate gives up on seen-chunk questions to keep new-chunk
questions safe. Next to it, bounds: for each of a few signals a gate could open on (similarity to the nearest
training question, the plain-search rank of its chunk, ...), the seen-chunk recall@10 such a gate could reach at
most with no new-chunk test question let through, even if its threshold were set on the test set and every
question it admits were found.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import stores
import torch

from dmhelpers import VectorStore, generate_questions, split_questions
from dmhelpers.deep_memory.adapter import QueryAdapter
from dmhelpers.deep_memory.training import single_threaded
from dmhelpers.evaluation.metrics import TOP_K

CACHE = Path("data/bench-cache")  # chat models' questions, kept between runs (the cache is keyed by model and chunk)
PROTOCOLS = {"workshop": ("data/workshop-store", 3), "default": ("data/store", 3), "tutorial": ("data/store", 1)}


def literal(text: str) -> int | float | str:
    """A command-line option value as the number it spells, or as text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def rank_of(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per question (a row of ``scores``), the rank of chunk ``rows[i]``: how many chunks score higher."""
    return (scores > scores[np.arange(len(rows)), rows][:, None]).sum(axis=1)


def ungated_reference(db: VectorStore, train_q: list[str], train_rel, test_q: list[str], test_rel, seen: np.ndarray,
                      seed: int, epochs: int = 100) -> tuple[float, int]:
    """Best test seen-chunk recall@10 over ``epochs`` of an ungated residual linear layer (full softmax)."""
    row = {cid: n for n, cid in enumerate(db.ids)}
    corpus = torch.from_numpy(np.array(db.embeddings))
    q_train = torch.from_numpy(db.embedding.embed(train_q))
    target = torch.tensor([row[r[0][0]] for r in train_rel])
    q_test = db.embedding.embed([q for q, s in zip(test_q, seen) if s])
    wanted = np.array([row[r[0][0]] for r, s in zip(test_rel, seen) if s])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = QueryAdapter(corpus.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    best = (0.0, 0)
    with single_threaded():
        for epoch in range(1, epochs + 1):
            for batch in np.array_split(rng.permutation(len(target)), max(1, len(target) // 64)):
                loss = torch.nn.functional.cross_entropy(model(q_train[batch]) @ corpus.T / 0.05, target[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                scores = (model(torch.from_numpy(q_test)) @ corpus.T).numpy()
            rank = rank_of(scores, wanted)
            best = max(best, (float((rank < 10).mean()), epoch), key=lambda b: b[0])
    return best


def gate_signals(sim: np.ndarray, scores: np.ndarray, train_chunk: np.ndarray) -> dict[str, np.ndarray]:
    """Per test question, signals a gate could open on (higher: more likely about a chunk seen in training), from
    its similarity to each training question, its plain-search scores and the training questions' chunk rows."""
    chunk = train_chunk[sim.argmax(axis=1)]
    rank = rank_of(scores, chunk)
    trained = np.isin(np.argsort(-scores, axis=1), np.unique(train_chunk))
    other = np.where(train_chunk[None, :] != chunk[:, None], sim, -1.0).max(axis=1)
    top = sim.max(axis=1)
    return {"similarity to the nearest training question": top,
            "plain rank of that question's chunk": -rank.astype(float),
            "similarity and that rank together": top - 0.01 * np.log1p(rank),
            "margin over questions about other chunks": top - other,
            "plain rank of the best trained chunk": -trained.argmax(axis=1).astype(float)}


def oracle_gate_bounds(db: VectorStore, train_q: list[str], train_rel, test_q: list[str], test_rel,
                       seen: np.ndarray) -> dict[str, tuple[float, float]]:
    """For each gate signal, the most seen-chunk recall@10 a gate on it could give without letting in a single
    new-chunk test question: its threshold set on the test set itself, just above the highest new-chunk question,
    and every admitted seen-chunk question counted as found (a bound, not a model). Also the share admitted."""
    row = {cid: n for n, cid in enumerate(db.ids)}
    q_test = db.embedding.embed(test_q)
    scores = q_test @ np.array(db.embeddings).T
    wanted = np.array([row[r[0][0]] for r in test_rel])
    found = rank_of(scores, wanted) < 10
    sim = q_test @ db.embedding.embed(train_q).T
    signals = gate_signals(sim, scores, np.array([row[r[0][0]] for r in train_rel]))
    bounds = {}
    for name, signal in signals.items():
        admitted = signal > (signal[~seen].max() if (~seen).any() else -np.inf)
        bounds[name] = (float((found | admitted)[seen].mean()), float(admitted[seen].mean()))
    return bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a TrainConfig option, e.g. --option risk 0.01 (repeatable)")
    parser.add_argument("--no-reference", action="store_true", help="skip the ungated reference layer")
    parser.add_argument("--previous-rule", action="store_true",
                        help="the previous release's rule instead: a gated layer and blend, no rank insertion")
    parser.add_argument("--llm", default="simulated",
                        help="who writes the questions: 'simulated' (the simulator), 'local' (the bundled chat model; "
                             "cached in data/bench-cache/) or a chat model name")
    args = parser.parse_args()
    options = {k: literal(v) for k, v in args.option}
    if args.previous_rule:
        options.update(alphas=(0.0, 0.5, 1.0), betas=(0.0, 0.5, 1.0), floors=(2.0, 2.0, 2.0))
    summary = []
    for name in args.protocols:
        store, per_chunk = PROTOCOLS[name]
        if name == "workshop":
            stores.ensure_store(store, preset="workshop")
        source = VectorStore(store, read_only=True)
        print(f"\n{name}: {len(source):,} chunks ({store}), {args.questions} questions ({args.llm}), {per_chunk} per "
              f"chunk, seeds {args.seeds[0]}-{args.seeds[-1]}")
        print(f"{'seed':>4} {'memory; layer a/b/out':<34} {'kind':<5} {'n':>4}  "
              + "  ".join(f"{'R@' + str(k):>9}" for k in TOP_K))
        pooled: dict[str, list] = {}
        lost_runs, reference, bounds, worst = 0, [], [], 0.0
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = f"v{source.version:06d}"
            for seed in args.seeds:
                folder = Path(tmp) / f"s{seed}"
                shutil.copytree(Path(store) / snapshot, folder / snapshot)
                shutil.copy(Path(store) / "STORE", folder / "STORE")
                db = VectorStore(folder, embedding=source.embedding)
                cache = None if args.llm == "simulated" else CACHE / f"questions-{args.llm}-{Path(store).name}.jsonl"
                questions, relevance = generate_questions(db.texts, db.ids, args.questions, seed=seed,
                                                          per_chunk=per_chunk, progress=False, llm=args.llm,
                                                          cache=cache)
                (tq, tr), (sq, sr) = split_questions(questions, relevance, 0.5, seed=seed)
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    job = db.deep_memory.train(tq, tr, seed=seed, **options)
                    report = db.deep_memory.evaluate(sq, sr)
                rec = db.deep_memory._read_job(job)
                gate = "" if rec["gate"] >= 1 else f" tau {rec['gate']:.2f}"
                slots = " ".join(f"{r}@{t:.2f}" for r, t in rec.get("slots", [])) or "off"
                model = f"{slots}; {rec['alpha']:.1f}/{rec['beta']:.1f}/{rec['alpha_out']:.2f}{gate}"
                lost_here = False
                for kind, v in report["by chunk"].items():
                    row = pooled.setdefault(kind, [])
                    row.append((v["n"], [(v["without model"][f"recall@{k}"], v["with model"][f"recall@{k}"])
                                         for k in TOP_K]))
                    cells = [f"{100 * a:3.0f}->{100 * b:3.0f}{'!' if b < a - 1e-9 else ' '}" for a, b in row[-1][1]]
                    lost_here |= kind == "new chunks" and any(b < a - 1e-9 for a, b in row[-1][1])
                    if kind == "new chunks":
                        worst = min(worst, 100 * (row[-1][1][TOP_K.index(10)][1] - row[-1][1][TOP_K.index(10)][0]))
                    print(f"{seed:>4} {model:<34} {kind.split()[0]:<5} {v['n']:>4}  " + "  ".join(cells))
                    model = ""
                lost_runs += lost_here
                seen_rows = report["by chunk"].get("seen chunks")
                if seen_rows and not args.no_reference:
                    trained = {c for r in tr for c, _ in r}
                    seen = np.array([all(c in trained for c, _ in r) for r in sr])
                    best, epoch = ungated_reference(db, tq, tr, sq, sr, seen, seed)
                    reference.append((seen_rows["n"], seen_rows["without model"]["recall@10"],
                                      seen_rows["with model"]["recall@10"], best, epoch))
                    bounds.append((seen_rows["n"], oracle_gate_bounds(db, tq, tr, sq, sr, seen)))
        print(f"pooled over {len(args.seeds)} seeds (weighted by questions); '!' marks a k where deep memory is below "
              "plain search")
        for kind, rows in pooled.items():
            w = np.array([n for n, _ in rows], dtype=float)
            cells = []
            for i in range(len(TOP_K)):
                a, b = (np.average([r[i][j] for _, r in rows], weights=w) for j in (0, 1))
                cells.append(f"{100 * a:4.1f}->{100 * b:4.1f}{'!' if b < a - 1e-9 else ' '}")
            print(f"{'all':>4} {'':<34} {kind.split()[0]:<5} {int(w.sum()):>4}  " + "  ".join(cells))
        line = (f"{name}: new-chunk questions lost something at some k in {lost_runs} of {len(args.seeds)} runs; "
                f"the worst run's new-chunk R@10 change: {worst:+.1f} pts")
        if reference:
            r = np.array(reference)
            w = r[:, 0]
            line += (f"; seen-chunk R@10 plain {np.average(r[:, 1], weights=w):.1%}, deep memory "
                     f"{np.average(r[:, 2], weights=w):.1%}, ungated layer at its best test epoch "
                     f"{np.average(r[:, 3], weights=w):.1%} (epochs {int(r[:, 4].min())}-{int(r[:, 4].max())})")
        summary.append(line)
        if bounds:
            w = np.array([n for n, _ in bounds], dtype=float)
            for signal in bounds[0][1]:
                bound, admitted = (np.average([b[signal][j] for _, b in bounds], weights=w) for j in (0, 1))
                summary.append(f"    a gate on the {signal}, admitting no new-chunk question: seen-chunk R@10 at "
                               f"most {bound:.1%} ({admitted:.0%} of seen-chunk questions admitted)")
    print("\nsummary")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
