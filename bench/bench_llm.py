"""Questions per second written by a chat model, one request at a time and with requests in flight.

    .venv/bin/python bench/bench_llm.py [--store data/store] [--questions 40] [--concurrency 8] [--latency 1.0]

Two servers on 127.0.0.1, both through ``generate_questions`` (one question per chunk, no cache, sampled chunks
of the store):

    local     the bundled SmolLM2-135M on llama.cpp's server (``llm="local"``), one thread: it answers one
              request at a time, so requests in flight only queue there
    remote    a stand-in for a remote API: an OpenAI-compatible endpoint that answers every request after
              ``--latency`` seconds, many at once, as a hosted API does (within its rate limit)

Prints questions per second for each server at concurrency 1 and ``--concurrency``, and the local server's
questions (first ten) for inspection.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import threading
import time
from pathlib import Path

from dmhelpers import VectorStore, generate_questions, local_llm


class _SlowChat(http.server.BaseHTTPRequestHandler):
    """Answers each chat request with a question after a fixed latency; requests are served in parallel."""

    latency = 1.0

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.latency)
        words = body["messages"][-1]["content"].split()
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content":
                              json.dumps({"question": f"What does the chunk say about {words[len(words) // 2]}?"})}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        raw = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:
        pass


def timed(db: VectorStore, n: int, llm: str, concurrency: int) -> tuple[float, list[str]]:
    start = time.monotonic()
    questions, _ = generate_questions(db.texts, db.ids, n, llm=llm, seed=1, concurrency=concurrency, progress=False)
    return len(questions) / (time.monotonic() - start), questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/store")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()
    db = VectorStore(Path(args.store), read_only=True)
    rows, levels = [], (1, args.concurrency)

    with local_llm() as server:
        rates = [timed(db, args.questions, "local", c) for c in levels]
        rows.append((f"local ({server.model}, 1 thread)", [r for r, _ in rates]))
        sample = rates[0][1][:10]

    _SlowChat.latency = args.latency
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowChat)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    os.environ.update(OPENAI_BASE_URL=f"http://127.0.0.1:{fake.server_address[1]}/v1", OPENAI_API_KEY="sk-bench")
    try:
        rows.append((f"remote stand-in ({args.latency:g} s per request)",
                     [timed(db, args.questions, "stand-in", c)[0] for c in levels]))
    finally:
        fake.shutdown()
        fake.server_close()

    print(f"\n{args.questions} questions, one per chunk; questions per second")
    print(f"{'server':<44}" + "".join(f"{f'concurrency {c}':>16}" for c in levels))
    for name, rates in rows:
        print(f"{name:<44}" + "".join(f"{r:>16.2f}" for r in rates))
    print("\nThe local model's first questions:")
    for q in sample:
        print(f"  {q}")


if __name__ == "__main__":
    main()
