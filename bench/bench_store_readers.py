"""Readers while a writer commits (issue 20, item 4): one process adds texts to an hnswlib store in a loop while two
others open it with ``read_only=True`` in a loop (and search it) for ``--seconds``; prints the opens attempted
and failed per reader and the writes done. No open may fail: a reader gets the last committed snapshot.

    .venv/bin/python bench/bench_store_readers.py [--seconds 120] [--chunks 2000] [--dimension 384] [--store PATH]

The embedder is a deterministic bag-of-words one of the real model's width, so the figures are the store's own
cost (reading and writing snapshots), not the model's. Exits 1 if any open or write failed.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from dmhelpers import VectorStore


class Embedder:
    """A deterministic bag-of-words embedder (the size of the real model's vectors, without its cost)."""

    def __init__(self, dimension: int) -> None:
        self.name, self.dimension = f"bench-readers/hash-{dimension}", dimension

    def embed(self, texts):
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dimension] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def writer(path: str, seconds: float, chunks: int, dimension: int, ready, results) -> None:
    db = VectorStore(path, embedding=Embedder(dimension))
    db.add_texts([f"first chunk {i} about zip archives csv rows and json documents {i}" for i in range(chunks)])
    ready.set()
    end, writes, errors = time.monotonic() + seconds, 0, []
    while time.monotonic() < end:
        try:
            db.add_texts([f"chunk {writes} written while readers open the store {writes}"])
            writes += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(exc).__name__}: {exc}")
    results.put(("writer", writes, len(errors), errors[:3]))


def reader(n: int, path: str, seconds: float, dimension: int, ready, results) -> None:
    ready.wait()
    end, opens, failures, sizes = time.monotonic() + seconds, 0, [], set()
    while time.monotonic() < end:
        opens += 1
        try:
            db = VectorStore(path, embedding=Embedder(dimension), read_only=True)
            db.search("zip archives", k=3)  # and it is usable
            sizes.add(len(db))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures.append(f"{type(exc).__name__}: {exc}")
    results.put((f"reader{n}", opens, len(failures), failures[:3], min(sizes, default=0), max(sizes, default=0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the writer and readers run")
    parser.add_argument("--chunks", type=int, default=2000, help="chunks in the store before the loop starts")
    parser.add_argument("--dimension", type=int, default=384, help="vector width")
    parser.add_argument("--store", default=None, help="the store folder (default: a new temporary one)")
    args = parser.parse_args()
    path = args.store or str(Path(tempfile.mkdtemp(prefix="bench-readers-")) / "store")
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(path, args.seconds, args.chunks, args.dimension, ready, results))]
    procs += [ctx.Process(target=reader, args=(n, path, args.seconds, args.dimension, ready, results))
              for n in (1, 2)]
    start = time.monotonic()
    for p in procs:
        p.start()
    got = [results.get(timeout=args.seconds + 600) for _ in procs]
    for p in procs:
        p.join()
    print(f"store {path}: {args.chunks} chunks of {args.dimension} dimensions to start, {args.seconds:g} s, "
          f"1 writer + 2 readers ({time.monotonic() - start:.0f} s in all)")
    attempted = failed = 0
    for row in sorted(got):
        if row[0] == "writer":
            print(f"writer: {row[1]} writes done, {row[2]} failed {row[3] if row[2] else ''}")
        else:
            attempted, failed = attempted + row[1], failed + row[2]
            print(f"{row[0]}: {row[1]} opens attempted, {row[2]} failed (sizes seen {row[4]}..{row[5]}) "
                  f"{row[3] if row[2] else ''}")
    print(f"total: {attempted} opens attempted, {failed} failed")
    sys.exit(1 if failed or any(r[0] == "writer" and r[2] for r in got) else 0)


if __name__ == "__main__":
    main()
