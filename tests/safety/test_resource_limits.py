"""Training never outgrows the machine: memory is bounded by questions and chunks, not (question, chunk) pairs,
and a job too big for the memory available is refused before anything is written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import RotatedTask

from dmhelpers import InputError

TRAIN = list(range(0, 300, 2))


BOUNDED_TRAINING = """
import json, sys, time
def peak():  # this process's own high-water mark (ru_maxrss would include the parent's, inherited across exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
from dmhelpers import VectorStore
from dmhelpers.data.synthetic import many_positives
from dmhelpers.deep_memory.training import TrainConfig, estimate_peak_bytes
s = many_positives()
db = VectorStore(sys.argv[1], embedding=s.embedder())
db.add_texts(s.chunk_ids, ids=s.chunk_ids)
before = peak()
start = time.perf_counter()
job = db.deep_memory.train(s.questions, s.relevance)
seconds = time.perf_counter() - start
record = db.deep_memory.status(job)
print(json.dumps({"pairs": s.pairs, "before": before, "seconds": seconds, "status": record["status"],
                  "peak": peak(),
                  "estimate": estimate_peak_bytes(len(s.questions), len(db), s.pairs, 384, TrainConfig()),
                  "validation": record["validation"]}))
"""


def test_many_relevant_chunks_per_question_train_in_memory_bounded_by_questions(tmp_path):
    """The shape of a public medical benchmark of real queries: 2,600 questions with about 42 graded relevant chunks
    each over 3,600 chunks (109,200 pairs), which once needed more than 24 GiB. Run in a fresh process, so its
    peak resident memory is the job's own."""
    out = subprocess.run([sys.executable, "-c", BOUNDED_TRAINING, str(tmp_path / "store")], capture_output=True,
                         text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["pairs"] > 100_000 and result["status"] == "completed"
    assert result["peak"] < 2 * 2**30, result
    assert result["peak"] - result["before"] < result["estimate"], result  # the docstring's formula bounds the job
    model, base = result["validation"]["model"]["seen"], result["validation"]["base"]["seen"]
    assert all(model[k] >= base[k] - 1e-9 for k in base)


def test_a_job_too_big_for_this_machine_is_refused_before_anything_is_written(rotated_store, monkeypatch):
    monkeypatch.setattr("dmhelpers.deep_memory.jobs.available_memory", lambda: 2**20)
    with pytest.raises(InputError, match=r"needs about .* GiB of memory, but only 0.0 GiB is available"):
        rotated_store.deep_memory.train(*RotatedTask.questions(TRAIN[:40], [0, 1]))
    assert not (rotated_store.path / "deep_memory").exists()
