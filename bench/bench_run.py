"""The full offline pipeline (what ``make run`` does: notebooks 01-05 on their defaults), step by step, in seconds.

    .venv/bin/python bench/bench_run.py [--reps 1] [--max-pages N] [--questions 200] [--docs-cache DIR]

Calls the same ``dmhelpers`` functions with the same defaults as the notebooks, in one process and into a
temporary folder, and times each step:

    render      01  build_python_docs: pydoc renders the standard-library docs to HTML (skip with --docs-cache)
    load model  01  get_embedding("local") and its first use (loading all-MiniLM-L6-v2)
    crawl       01  open_site + get_all_links + load_pages over HTTP on 127.0.0.1
    to text     01  pages_to_documents (html2text)
    split       01  split_documents(800, 80) + unique_documents, and count_tokens for the length figure
    embed       01  LocalEmbeddings.embed of every chunk
    index       01  VectorStore.add_documents with those vectors (hnswlib graph, snapshot files) + the demo search
    open store  02  VectorStore(path) as notebook 02 opens it
    generate    02  generate_questions (offline simulator, 200 questions, 3 per chunk)
    split q.    02  split_questions + save_questions
    train       02  db.deep_memory.train (epochs 30, learning rate 0.003) + status
    evaluate    03  open read-only, load_questions, deep_memory.evaluate, the k=100 searches for rank changes
    ragas       03  context_recall (RAGAS, offline non-LLM), k=10
    inference   04  plain and deep retrievers: batch over the test questions, invoke, extractive answers
    cost        05  get_encoding("gpt-4o-mini"), cost_curve plain and deep for k = 1..20, savings

Each notebook opens the store itself, as in its own kernel (the model is loaded once per process here, so
later opens are cheaper than in ``make run``). Not included: starting Jupyter kernels and papermill
(``make run`` adds a few seconds per notebook) and drawing the figures. With ``--reps`` above 1 each step
shows its median.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import realtext

from dmhelpers import (VectorStore, answer, build_python_docs, context_recall, generate_questions, get_all_links,
                       get_embedding, get_encoding, load_pages, load_questions, open_site, pages_to_documents,
                       save_questions, set_random_seed, split_documents, split_questions, unique_documents)
from dmhelpers.evaluation.cost import cost_curve, savings

# The notebooks' defaults.
CHUNK_SIZE, CHUNK_OVERLAP, EMBEDDING, SEED = 800, 80, "local", 0  # 01
DEMO_QUESTION = "How do I read a file inside a zip archive?"  # 01
QUESTIONS_PER_CHUNK, TRAIN_FRACTION, EPOCHS, LEARNING_RATE = 3, 0.5, 30, 0.003  # 02
TOP_K, RAGAS_K = [1, 3, 5, 10, 50, 100], 10  # 03
K = 10  # 04
BASELINE_K, MAX_K, PRICE_MODEL, PRICE_PER_MTOK = 10, 20, "gpt-4o-mini", 0.15  # 05


def run_once(tmp: Path, max_pages: int | None, n_questions: int, docs_cache: str | None,
             timed: Callable[[str, Callable[[], Any], Callable[[Any], str] | None], Any]) -> None:
    set_random_seed(SEED)
    docs_dir = docs_cache or tmp / "python-docs"
    timed("render", lambda: build_python_docs(docs_dir), lambda p: f"{len(list(Path(p).glob('*.html'))):,} HTML files")

    def load_model():
        embedding = get_embedding(EMBEDDING)
        embedding.dimension  # loads the model
        return embedding

    embedding = timed("load model", load_model, lambda e: e.name)

    def crawl():
        with open_site(None, cache=docs_dir) as start_url:
            links = get_all_links(start_url)
            return links, *load_pages(links, max_pages=max_pages)

    links, pages, failed = timed("crawl", crawl, lambda r: f"{len(r[0]):,} links, {len(r[1]):,} pages, "
                                                             f"{len(r[2])} failed")
    docs = timed("to text", lambda: pages_to_documents(pages), lambda d: f"{len(d):,} documents")

    def split():
        chunks = unique_documents(split_documents(docs, chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP))
        tokens = embedding.count_tokens([c.page_content for c in chunks])
        return chunks, tokens

    chunks, _ = timed("split", split, lambda r: f"{len(r[0]):,} chunks, {sum(r[1]):,} word pieces")
    texts = [c.page_content for c in chunks]
    vectors = timed("embed", lambda: embedding.embed(texts),
                    lambda v: f"{len(v) / max(timings['embed'][-1], 1e-9):,.0f} chunks/s")
    path = tmp / "store"

    def index():
        db = VectorStore(path, embedding=realtext.Precomputed(embedding.name, texts, vectors, fallback=embedding),
                         overwrite=True)
        db.add_documents(chunks)
        db.search(DEMO_QUESTION, k=3)
        return db

    timed("index", index, lambda db: f"{len(db):,} chunks")
    db = timed("open store", lambda: VectorStore(path), lambda d: f"{d.embedding.dimension}-d vectors")
    questions, relevance = timed(
        "generate", lambda: generate_questions(db.texts, db.ids, n_questions, seed=SEED, per_chunk=QUESTIONS_PER_CHUNK,
                                               progress=False),
        lambda r: f"{len(r[0]):,} questions")

    def split_q():
        train, test = split_questions(questions, relevance, train_fraction=TRAIN_FRACTION, seed=SEED)
        save_questions(path / "questions" / "train.jsonl", *train)
        save_questions(path / "questions" / "test.jsonl", *test)
        return train, test

    (train_q, train_r), (test_q, test_r) = timed("split q.", split_q, lambda r: f"{len(r[0][0])} / {len(r[1][0])}")

    def train():
        job_id = db.deep_memory.train(queries=train_q, relevance=train_r, epochs=EPOCHS, learning_rate=LEARNING_RATE,
                                      seed=SEED)
        return db.deep_memory.status(job_id)

    timed("train", train, lambda j: f"{j['status']}, alpha {j.get('alpha', 0):.1f}, beta {j.get('beta', 0):.1f}, "
                                    f"{j.get('epochs_chosen', '?')} epochs")
    questions_dir = path / "questions"

    def evaluate():
        db = VectorStore(path, read_only=True)
        test_q, test_r = load_questions(questions_dir / "test.jsonl")
        report = db.deep_memory.evaluate(queries=test_q, relevance=test_r, top_k=TOP_K)
        db.search(test_q, k=100, deep_memory=False)
        db.search(test_q, k=100, deep_memory=True)
        return report

    timed("evaluate", evaluate,
          lambda r: "recall@10 " + " -> ".join(f"{100 * r[m]['recall@10']:.0f}%"
                                               for m in ("without model", "with model") if m in r))

    def ragas():
        db = VectorStore(path, read_only=True)
        return context_recall(db, *load_questions(questions_dir / "test.jsonl"), k=RAGAS_K, llm="offline")

    timed("ragas", ragas, lambda r: ", ".join(f"{name} {v.get('without model', 0):.2f} -> {v.get('with model', 0):.2f}"
                                              for name, v in r.get("scores", {}).items()))

    def inference():
        db = VectorStore(path, read_only=True)
        test_q, _ = load_questions(questions_dir / "test.jsonl")
        plain, deep = db.as_retriever(k=K, deep_memory=False), db.as_retriever(k=K, deep_memory=True)
        plain.batch(test_q)
        deep.batch(test_q)
        plain.invoke(test_q[0])
        deep.invoke(test_q[0])
        return [answer(test_q[0], retriever, llm="offline") for retriever in (plain, deep)]

    timed("inference", inference, lambda r: f"{len(test_q)} questions x 2 retrievers, {len(r)} answers")

    def cost():
        db = VectorStore(path, read_only=True)
        test_q, test_r = load_questions(questions_dir / "test.jsonl")
        encoding = get_encoding(PRICE_MODEL)
        ks = list(range(1, MAX_K + 1))
        plain = cost_curve(db, test_q, test_r, ks, deep_memory=False, encoding=encoding)
        deep = cost_curve(db, test_q, test_r, ks, deep_memory=True, encoding=encoding)
        return savings(plain, deep, BASELINE_K, PRICE_PER_MTOK)

    timed("cost", cost, lambda r: f"k {r['baseline_k']} -> {r['k_deep']}, ${r['dollars_saved_per_1000']:.2f} saved per "
                                  "1,000 questions")


timings: dict[str, list[float]] = defaultdict(list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=1, help="whole runs (each step shows its median)")
    parser.add_argument("--max-pages", type=int, default=None, help="notebook 01's MAX_PAGES (default: all)")
    parser.add_argument("--questions", type=int, default=200, help="notebook 02's N_QUESTIONS")
    parser.add_argument("--docs-cache", default=None,
                        help="reuse a rendered docs folder (e.g. data/python-docs) instead of rendering anew")
    args = parser.parse_args()
    notes: dict[str, str] = {}

    def timed(step: str, fn: Callable[[], Any], describe: Callable[[Any], str] | None = None) -> Any:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            result = fn()
            timings[step].append(time.perf_counter() - start)
        if describe:
            notes[step] = describe(result)
        print(f"  {step:<11} {timings[step][-1]:7.1f} s", flush=True)
        return result

    for rep in range(args.reps):
        print(f"run {rep + 1} of {args.reps}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            run_once(Path(tmp), args.max_pages, args.questions, args.docs_cache, timed)
    medians = {step: statistics.median(t) for step, t in timings.items()}
    rows = [[step, f"{s:.1f}", f"{s / sum(medians.values()):.0%}", notes.get(step, "")] for step, s in medians.items()]
    rows.append(["total", f"{sum(medians.values()):.1f}", "100%", ""])
    runs = f"median of {args.reps} runs" if args.reps > 1 else "one run"
    print(f"\nthe offline pipeline, step by step ({runs}"
          f"{', docs from ' + args.docs_cache if args.docs_cache else ''})")
    print(realtext.table(["step", "seconds", "share", "result"], rows, align="lrrl"))


if __name__ == "__main__":
    main()
