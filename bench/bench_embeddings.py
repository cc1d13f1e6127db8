"""Embedding throughput of ``LocalEmbeddings`` (all-MiniLM-L6-v2 on the CPU) across batch sizes and torch threads.

    .venv/bin/python bench/bench_embeddings.py [--store data/store] [--chunks 128] [--questions 512]
                                               [--batch-sizes 16 32 64 128] [--threads 1 2] [--reps 3]

Two kinds of text, both real: chunks of about 1,000 characters (the default corpus's pages re-split with
``split_documents(chunk_size=1000, chunk_overlap=100)``, only pieces of at least 900 characters) and short
questions (notebook 02's offline question writer). Every setting embeds the same texts with one loaded
model; settings alternate within each repetition and the table shows medians. The row marked ``*`` is what
``LocalEmbeddings()`` does by default (its ``batch_size`` and torch's default thread count here).
"""
from __future__ import annotations

import argparse
import inspect
import random
import statistics
import time
from collections import defaultdict

import numpy as np
import realtext
import torch

from dmhelpers import Document, LocalEmbeddings, VectorStore, generate_questions, set_random_seed, split_documents


def long_chunks(store: VectorStore, n: int, size: int = 1000) -> list[str]:
    """``n`` real chunks of about ``size`` characters: the store's pages rejoined and split again."""
    pages: dict[str, list[str]] = defaultdict(list)
    for text, meta in zip(store.texts, store.metadatas):
        pages[meta.get("source", "")].append(text)
    docs = [Document("\n\n".join(parts), {"source": src}) for src, parts in pages.items()]
    pieces = [d.page_content for d in split_documents(docs, chunk_size=size, chunk_overlap=size // 10)
              if len(d.page_content) >= 0.9 * size]
    return random.Random(0).sample(pieces, min(n, len(pieces)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store", help="the default store (notebook 01)")
    parser.add_argument("--chunks", type=int, default=128, help="~1,000-character chunks per measurement")
    parser.add_argument("--questions", type=int, default=512, help="questions per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians are shown)")
    args = parser.parse_args()
    set_random_seed(0)
    default_threads = torch.get_num_threads()
    default_batch = inspect.signature(LocalEmbeddings.__init__).parameters["batch_size"].default

    store = VectorStore(args.store, read_only=True)
    chunks = long_chunks(store, args.chunks)
    questions, _ = generate_questions(store.texts, store.ids, args.questions, per_chunk=1, seed=0, progress=False)
    emb = LocalEmbeddings(store.embedding.name, show_progress=False)
    tokens = {"chunks": emb.count_tokens(chunks), "questions": emb.count_tokens(questions)}
    print(f"model {emb.name}, reads {emb.max_tokens} word pieces; torch {torch.__version__}, default threads "
          f"{default_threads}, LocalEmbeddings default batch_size {default_batch}")
    for kind, texts in (("chunks", chunks), ("questions", questions)):
        t = tokens[kind]
        print(f"{kind}: {len(texts):,} texts, {statistics.mean(map(len, texts)):,.0f} characters and "
              f"{statistics.mean(t):.0f} word pieces on average ({sum(x > emb.max_tokens for x in t)} cut at "
              f"{emb.max_tokens})")

    settings = [(th, b) for th in sorted(set(args.threads) | {default_threads})
                for b in sorted(set(args.batch_sizes) | {default_batch})]
    default = (default_threads, default_batch)
    times: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    reference = {}
    emb.embed(questions[:32])  # load the model and warm up
    for rep in range(args.reps):
        for threads, batch in settings:
            torch.set_num_threads(threads)
            emb.batch_size = batch
            for kind, texts in (("chunks", chunks), ("questions", questions)):
                start = time.perf_counter()
                vectors = emb.embed(texts)
                times[kind, threads, batch].append(time.perf_counter() - start)
                if kind not in reference:
                    reference[kind] = vectors
                elif rep == 0:  # every setting must give the same vectors
                    assert np.abs(vectors - reference[kind]).max() < 1e-3, (kind, threads, batch)
    torch.set_num_threads(default_threads)

    n_of = {"chunks": len(chunks), "questions": len(questions)}
    rate = {key: n_of[key[0]] / statistics.median(v) for key, v in times.items()}
    low = {key: n_of[key[0]] / max(v) for key, v in times.items()}  # slowest repetition
    high = {key: n_of[key[0]] / min(v) for key, v in times.items()}  # fastest repetition
    rows = []
    for threads, batch in settings:
        mark = "*" if (threads, batch) == default else ""
        c, q = ("chunks", threads, batch), ("questions", threads, batch)
        rows.append([f"{threads} thread{'s' if threads > 1 else ''}, batch {batch}{mark}",
                     f"{rate[c]:,.1f}", f"{low[c]:,.1f}-{high[c]:,.1f}",
                     f"{rate[q]:,.0f}", f"{low[q]:,.0f}-{high[q]:,.0f}"])
    print(f"\nthroughput (texts per second: median and range of {args.reps} repetitions; "
          "* = LocalEmbeddings() default)")
    print(realtext.table(["setting", "chunks/s", "range", "questions/s", "range"], rows))
    print()
    for kind in ("chunks", "questions"):
        best = max(settings, key=lambda s: rate[(kind, *s)])
        b, d = (kind, *best), (kind, *default)
        gain = rate[b] / rate[d] - 1
        if best == default:
            verdict = "the default is the fastest"
        elif gain > 0.10 and low[b] > high[d]:
            verdict = "clearly faster: > 10 % and every repetition beat every repetition of the default"
        else:
            verdict = "not clearly faster (within 10 % or within the run-to-run spread)"
        print(f"{kind}: fastest {best[0]} thread(s), batch {best[1]}: {rate[b]:,.1f}/s vs default {rate[d]:,.1f}/s "
              f"({gain:+.0%}; {verdict})")

if __name__ == "__main__":
    main()
