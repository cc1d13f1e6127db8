"""Deep Memory speed on a 20k-chunk store: training time, and the extra cost of ``deep_memory=True``.

    .venv/bin/python bench/bench_deep_memory.py [--store data/store] [--chunks 20000]
                                                [--questions 100 1000 10000] [--train-reps 3] [--search-reps 21]
                                                [--whole-reps 3] [--profile [N]]

The store holds real text: the default store's chunks (notebook 01) and short passages of real technical
prose up to ``--chunks`` (see ``bench/realtext.py``; their vectors are cached in ``data/bench-cache/``, the
first run embeds them). Questions are notebook 02's offline simulated questions about those chunks, 3 per
chunk, embedded once and cached.

1. Training: ``db.deep_memory.train(questions[:n], relevance[:n])`` with default settings, median of
   ``--train-reps`` runs (one run for n > 1,000 unless ``--train-reps-large`` says otherwise). The questions
   are embedded ahead of time, so this is the training itself; the ``+ embed`` column adds what embedding
   them costs (``LocalEmbeddings`` on 1,000 questions, scaled to n).
2. Search cost, plain vs ``deep_memory=True``, for the model of each training size, on questions that were
   not trained on: the vector part alone (``db.search_vectors`` on embedded questions, with and without
   ``db.deep_memory.transform``; exactly what ``search`` does after embedding) and whole ``db.search(...)``
   calls (embedding included), single questions and batches of 100, medians of ``--search-reps`` and
   ``--whole-reps`` (a whole search is dominated by embedding the question, whose noise hides the adapter;
   the "adapter share" column relates the vector part's extra time to a whole search instead).
3. Many relevant chunks per question (``--many-positives``): the shape of a medical benchmark of real queries,
   2,600 questions with about 42 graded relevant chunks each over 3,600 chunks (``dmhelpers.data.synthetic``), trained
   in a child process so its peak resident memory is the job's own.
4. ``--profile [N]``: cProfile of one training run on N questions (default 1,000): the top 10 functions by
   cumulative and by own time.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import realtext

from dmhelpers import VectorStore, set_random_seed

K = 10
TARGET_TRAIN_1000_S = 10.0
TARGET_EXTRA_US, TARGET_EXTRA_SHARE = 50.0, 0.05


def quiet():
    """Silence train()'s progress bar and status printing."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def interleaved(fns: dict[str, Callable[[], object]], reps: int, per: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds per item of each function, alternating the functions within each repetition."""
    for fn in fns.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / per)
    return {name: statistics.median(v) for name, v in times.items()}


def print_profile(profile: cProfile.Profile, top: int = 10) -> None:
    stats = pstats.Stats(profile).stats  # {(file, line, name): (primitive calls, calls, own s, cumulative s, callers)}
    root = Path.cwd()

    def where(func: tuple[str, int, str]) -> str:
        file, line, name = func
        if file == "~":
            return name
        path = Path(file)
        short = str(path.relative_to(root)) if path.is_relative_to(root) and ".venv" not in path.parts else \
            "/".join(path.parts[-2:])
        return f"{short}:{line}({name})"

    for title, key in (("cumulative", 3), ("own time", 2)):
        rows = sorted(stats.items(), key=lambda kv: kv[1][key], reverse=True)[:top]
        print(f"\ntop {top} by {title}")
        print(realtext.table(["function", "calls", "own s", "cumulative s"],
                             [[where(f)[:110], f"{v[1]:,}", f"{v[2]:.2f}", f"{v[3]:.2f}"] for f, v in rows]))


MANY_POSITIVES = """
import json, sys, tempfile, time
def peak():  # this process's own high-water mark (ru_maxrss would include the parent's, inherited across exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
from dmhelpers import VectorStore
from dmhelpers.data.synthetic import many_positives
s = many_positives(n_questions=int(sys.argv[1]))
with tempfile.TemporaryDirectory() as tmp:
    db = VectorStore(tmp + "/store", embedding=s.embedder())
    db.add_texts(s.chunk_ids, ids=s.chunk_ids)
    before = peak()
    start = time.perf_counter()
    job = db.deep_memory.train(s.questions, s.relevance)
    seconds = time.perf_counter() - start
    rec = db.deep_memory._read_job(job)
print(json.dumps({"pairs": s.pairs, "seconds": seconds, "before": before,
                  "peak": peak(), "job": rec}))
"""


def many_positives_rows(sizes: list[int]) -> list[list[object]]:
    """Train the many-relevant-chunks shape in a child process per size; time, peak memory and the choice."""
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", MANY_POSITIVES, str(n)], capture_output=True, text=True,
                             check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        job, val = r["job"], r["job"]["validation"]
        seen = f"{100 * val['base']['seen']['recall@10']:.1f} -> {100 * val['model']['seen']['recall@10']:.1f}"
        rows.append([f"{n:,}", f"{r['pairs']:,}", f"{r['seconds']:.1f}", f"{r['peak'] / 2**20:,.0f}",
                     f"{(r['peak'] - r['before']) / 2**20:,.0f}", job["carried_by"] or "nothing", seen])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store", help="the default store (notebook 01)")
    parser.add_argument("--chunks", type=int, default=20_000, help="chunks in the benchmark store")
    parser.add_argument("--questions", type=int, nargs="+", default=[100, 1000, 10_000], help="training sizes")
    parser.add_argument("--train-reps", type=int, default=3, help="training runs per size up to 1,000 (median)")
    parser.add_argument("--train-reps-large", type=int, default=1, help="training runs per size above 1,000")
    parser.add_argument("--search-reps", type=int, default=21, help="repetitions of the vector-part timing (median)")
    parser.add_argument("--whole-reps", type=int, default=3, help="repetitions of whole search() timing (median)")
    parser.add_argument("--single", type=int, default=100, help="questions searched one call each")
    parser.add_argument("--batch", type=int, default=100, help="questions per batched call")
    parser.add_argument("--many-positives", type=int, nargs="*", default=[2600], metavar="N",
                        help="questions of the many-relevant-chunks shape (none: skip)")
    parser.add_argument("--quality", type=int, default=1000, help="held-out questions each model is evaluated on")
    parser.add_argument("--profile", type=int, nargs="?", const=1000, default=None, metavar="N",
                        help="also profile one training run on N questions (default N: 1,000)")
    args = parser.parse_args()
    set_random_seed(0)

    corpus = realtext.load_corpus(args.store, args.chunks, 0)
    embedder = corpus.embedding
    n_max, n_search = max(args.questions), max(args.single, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = f"{tmp}/store"
        table = realtext.Precomputed(embedder.name, corpus.texts, corpus.vectors)
        db = VectorStore(folder, embedding=table)
        start = time.perf_counter()
        db.add_texts(corpus.texts)
        built = time.perf_counter() - start
        n_all = max(n_max + max(n_search, args.quality), args.profile or 0)
        questions, relevance = realtext.questions_cached(db.texts, db.ids, n_all, per_chunk=3, seed=0)
        q_vectors = realtext.embed_cached(questions, embedder)
        table.table.update(zip(questions, q_vectors))
        held_out, held_vectors = questions[n_max:n_max + n_search], q_vectors[n_max:n_max + n_search]
        print(f"store: {len(db):,} chunks x {corpus.vectors.shape[1]} ({corpus.n_store:,} from {args.store}, the "
              f"rest real passages), built in {built:.1f} s; {len(questions):,} simulated questions about "
              f"{len({r[0][0] for r in relevance}):,} chunks; {n_search} of them, after the first {n_max:,}, are "
              "held out for search timing")

        sample = questions[:1000]
        embedder.embed(sample[:16])  # load the model
        embed_per_q = realtext.median_time(lambda: embedder.embed(sample), 3, warmup=0) / len(sample)

        print(f"\ntraining (blocking, default settings; questions embedded ahead of time; + embed adds "
              f"{embed_per_q * 1e3:.1f} ms per question, measured on {len(sample):,})")
        rows, jobs, train_s, quality = [], {}, {}, []
        test_q, test_rel = questions[n_max:n_max + args.quality], relevance[n_max:n_max + args.quality]
        for n in args.questions:
            reps = args.train_reps if n <= 1000 else args.train_reps_large
            times = []
            for _ in range(reps):
                with quiet():
                    start = time.perf_counter()
                    job = db.deep_memory.train(questions[:n], relevance[:n], seed=0)
                    times.append(time.perf_counter() - start)
                    rec = db.deep_memory.status(job)
            jobs[n], train_s[n] = job, statistics.median(times)
            with quiet():
                report = db.deep_memory.evaluate(test_q, test_rel)
            for kind, v in report["by chunk"].items():
                quality.append([f"{n:,}", kind, v["n"]] + [
                    f"{100 * v['without model'][f'recall@{k}']:.1f} -> {100 * v['with model'][f'recall@{k}']:.1f}"
                    for k in (1, 3, 5, 10, 50, 100)])
            gate = rec.get("gate")
            rows.append([f"{n:,}", f"{train_s[n]:.1f}", f"{train_s[n] + n * embed_per_q:.1f}",
                         f"{min(times):.1f}-{max(times):.1f}" if reps > 1 else "-", reps,
                         f"{rec.get('alpha', 0):.1f}", f"{rec.get('beta', 0):.1f}", f"{rec.get('alpha_out', 0):.2f}",
                         "none" if gate is None else "closed" if gate >= 1 else f"{gate:.2f}",
                         rec.get("epochs_chosen", "?"), len(rec.get("history", [])) - 1])
        print(realtext.table(["questions", "train s", "+ embed s", "range", "runs", "alpha", "beta", "alpha out",
                              "gate", "epochs", "of"], rows))
        print(f"\nquality of each model on {len(test_q):,} held-out questions (the next ones written, about chunks "
              "the training questions mostly did not ask about), plain search -> deep memory, %")
        print(realtext.table(["model", "test questions", "n", "R@1", "R@3", "R@5", "R@10", "R@50", "R@100"], quality))

        real = VectorStore(folder, embedding=embedder)  # the same store, opened as a user would
        one = [held_out[i:i + 1] for i in range(args.single)]
        one_v = [held_vectors[i:i + 1] for i in range(args.single)]
        batch, batch_v = held_out[:args.batch], held_vectors[:args.batch]
        results = {}
        for n, job in jobs.items():
            real.deep_memory.set_model(job)
            dm = real.deep_memory
            vec = interleaved({
                "plain 1": lambda: [real.search_vectors(v, K) for v in one_v],
                "deep 1": lambda: [real.search_vectors(dm.transform(v), K) for v in one_v],
                "plain B": lambda: real.search_vectors(batch_v, K),
                "deep B": lambda: real.search_vectors(dm.transform(batch_v), K),
                "adapter 1": lambda: [dm.transform(v) for v in one_v],  # the adapter alone, timed directly
                "adapter B": lambda: dm.transform(batch_v),
            }, args.search_reps, 1)
            real.search(held_out[0], K, deep_memory=True)  # warm-up
            whole = interleaved({
                "plain 1": lambda: [real.search(q[0], K) for q in one],
                "deep 1": lambda: [real.search(q[0], K, deep_memory=True) for q in one],
                "plain B": lambda: real.search(batch, K),
                "deep B": lambda: real.search(batch, K, deep_memory=True),
            }, args.whole_reps, 1, warmup=False)
            for mode, per in (("1", args.single), ("B", args.batch)):
                results[n, mode] = {kind: {k: v / per for k, v in t.items() if k.endswith(mode)}
                                    for kind, t in (("vector", vec), ("whole", whole))}

        print(f"\nsearch cost, plain vs deep_memory=True, per question (k={K}; vector part: median of "
              f"{args.search_reps}, whole search(): median of {args.whole_reps}; 'model' = the model trained on "
              f"that many questions)")
        rows = []
        for (n, mode), r in results.items():
            v, w = r["vector"], r["whole"]
            extra = v[f"deep {mode}"] - v[f"plain {mode}"]
            rows.append([f"{n:,}", "single" if mode == "1" else f"batch {args.batch}",
                         f"{v[f'plain {mode}'] * 1e6:,.1f}", f"{v[f'deep {mode}'] * 1e6:,.1f}", f"{extra * 1e6:+,.1f}",
                         f"{extra / v[f'plain {mode}']:+.1%}", f"{w[f'plain {mode}'] * 1e6:,.0f}",
                         f"{w[f'deep {mode}'] * 1e6:,.0f}", f"{w[f'deep {mode}'] / w[f'plain {mode}'] - 1:+.1%}",
                         f"{v[f'adapter {mode}'] * 1e6:,.1f}", f"{v[f'adapter {mode}'] / w[f'plain {mode}']:+.2%}"])
        print(realtext.table(["model", "queries", "vector us", "+deep us", "extra us", "extra", "search() us",
                              "+deep us", "measured", "adapter us", "adapter share"], rows))
        print("('extra' and 'measured' are differences of two noisy timings; 'adapter us' times the adapter alone "
              "(db.deep_memory.transform), and 'adapter share' is that over a whole plain search(). A gate or memory "
              "(beta > 0) compares each question with every training question, so its cost grows with the training "
              "set.)")

        print("\ntargets")
        if 1000 in train_s:
            ok = train_s[1000] <= TARGET_TRAIN_1000_S
            print(f"  training on 1,000 questions <= {TARGET_TRAIN_1000_S:.0f} s: {'MET' if ok else 'MISSED'} "
                  f"({train_s[1000]:.1f} s; {train_s[1000] + 1000 * embed_per_q:.1f} s with embedding them)")
        default_n = min(jobs)
        for mode in ("1", "B"):
            r = results[default_n, mode]
            extra = r["vector"][f"adapter {mode}"]  # measured directly: a difference of two timings is noisier
            share = extra / r["whole"][f"plain {mode}"]
            ok = extra * 1e6 <= TARGET_EXTRA_US and share <= TARGET_EXTRA_SHARE
            print(f"  adapter overhead, model of {default_n:,} questions, {'single' if mode == '1' else 'batch'} "
                  f"queries (<= {TARGET_EXTRA_US:.0f} us and <= {TARGET_EXTRA_SHARE:.0%} of search()): "
                  f"{'MET' if ok else 'MISSED'} (adapter {extra * 1e6:+.1f} us, {share:+.2%} of search(); "
                  f"{extra / r['vector'][f'plain {mode}']:+.1%} of the vector part alone)")

        if args.many_positives:
            print("\nmany relevant chunks per question: 3,600 chunks, about 42 graded relevant chunks per question "
                  "(dmhelpers.synthetic.many_positives), default settings, one child process per size")
            print(realtext.table(["questions", "pairs", "train s", "peak RSS MB", "of it training MB", "gain from",
                                  "held-out R@10 %"], many_positives_rows(args.many_positives)))

        if args.profile:
            n = min(args.profile, len(questions))
            print(f"\nprofile of one training run on {n:,} questions (questions embedded ahead of time)")
            profile = cProfile.Profile()
            with quiet():
                profile.enable()
                db.deep_memory.train(questions[:n], relevance[:n], seed=0)
                profile.disable()
            print_profile(profile)


if __name__ == "__main__":
    main()
