"""Deep Memory quality on the default corpus over several seeds: plain search vs deep memory on test questions,
split into questions about chunks seen in training and about new chunks.

    .venv/bin/python bench/bench_quality.py [--store data/store] [--seeds 0 1 2 3 4] [--per-chunk 3]

Each seed writes its own questions (notebook 02's defaults: 200 questions, 100 train / 100 test), trains on a
scratch copy of the store's vectors and evaluates. One seed's test set has only a few dozen questions of each
kind, so a single split says little; the table shows every seed and the pooled result.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile

import numpy as np

from dmhelpers import VectorStore, generate_questions, split_questions
from dmhelpers.metrics import TOP_K


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="data/store")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--per-chunk", type=int, default=3)
    parser.add_argument("--option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a TrainConfig option, e.g. --option confidence 1.0 (repeatable)")
    args = parser.parse_args()
    pooled: dict[str, dict[str, list[float]]] = {}
    print(f"{'seed':>4} {'kind':<12} {'n':>4}  " + "  ".join(f"{'R@' + str(k):>11}" for k in TOP_K))
    with tempfile.TemporaryDirectory() as tmp:
        source = VectorStore(args.store, read_only=True)
        snapshot = f"v{source.version:06d}"
        for seed in args.seeds:
            folder = f"{tmp}/s{seed}"
            shutil.copytree(f"{args.store}/{snapshot}", f"{folder}/{snapshot}")
            shutil.copy(f"{args.store}/STORE", f"{folder}/STORE")
            db = VectorStore(folder, embedding=source.embedding)
            questions, relevance = generate_questions(db.texts, db.ids, args.questions, seed=seed,
                                                      per_chunk=args.per_chunk, progress=False)
            (tq, tr), (sq, sr) = split_questions(questions, relevance, 0.5, seed=seed)
            with contextlib.redirect_stdout(io.StringIO()):
                db.deep_memory.train(tq, tr, seed=seed, **{k: float(v) for k, v in args.option})
                report = db.deep_memory.evaluate(sq, sr)
            for kind, v in report["by chunk"].items():
                row = pooled.setdefault(kind, {"n": [], **{f"recall@{k}": [] for k in TOP_K}})
                row["n"].append(v["n"])
                cells = []
                for k in TOP_K:
                    a, b = v["without model"][f"recall@{k}"], v["with model"][f"recall@{k}"]
                    row[f"recall@{k}"].append((a, b))
                    cells.append(f"{100 * a:4.0f}->{100 * b:3.0f}{'!' if b < a - 1e-9 else ' '}")
                print(f"{seed:>4} {kind:<12} {v['n']:>4}  " + "  ".join(cells))
    print("\npooled over seeds (weighted by questions); '!' marks a k where deep memory is below plain search")
    for kind, row in pooled.items():
        w = np.array(row["n"], dtype=float)
        cells = []
        for k in TOP_K:
            a, b = (np.average([x[i] for x in row[f"recall@{k}"]], weights=w) for i in (0, 1))
            cells.append(f"{100 * a:4.1f}->{100 * b:4.1f}{'!' if b < a - 1e-9 else ' '}")
        print(f"{'all':>4} {kind:<12} {int(w.sum()):>4}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
