"""``db.deep_memory``: training jobs, model versions and the active model, named as in Deep Lake.

    job_id = db.deep_memory.train(queries=questions, relevance=relevance)
    db.deep_memory.status(job_id); db.deep_memory.list_jobs(); db.deep_memory.cancel(job_id)
    db.deep_memory.get_model(); db.deep_memory.set_model(job_id)
    db.search(question, k=10, deep_memory=True)

Each job is kept in the store's model repository (:mod:`dmhelpers.deep_memory.repository`: a folder beside an
hnswlib store, a collection beside a Milvus one) under ``<job_id>/``: ``job.json`` (status, parameters, history,
metrics) and, once completed, ``adapter.safetensors``. ``ACTIVE`` names the active model and is replaced
atomically, so a failed, cancelled or interrupted job never replaces it.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dmhelpers.deep_memory.adapter import CLOSED, apply_adapter, memory_values, weights_from_bytes, weights_to_bytes
from dmhelpers.deep_memory.checks import (DamagedModelError, check_groups, check_learning_rate, check_model,
                                          final_check, validate_questions)
from dmhelpers.deep_memory.config import MIN_TRAINING_QUESTIONS, TrainConfig
from dmhelpers.deep_memory.insertion import first_chunk, load_memory, rerank_hits, rerank_rows
from dmhelpers.deep_memory.interface import SearchableStore
from dmhelpers.deep_memory.status import format_status, model_summary, result_line
from dmhelpers.deep_memory.training import (Cancelled, available_memory, estimate_peak_bytes, mine_negatives,
                                            single_threaded, train_adapter)
from dmhelpers.evaluation.evaluate import evaluate
from dmhelpers.evaluation.metrics import TOP_K
from dmhelpers.utils.errors import DeepMemoryError, InputError, StoreError, check_number, check_whole
from dmhelpers.utils.files import json_text
from dmhelpers.utils.progress import progress_bar

ACTIVE = "ACTIVE"


class DeepMemory:
    """Train, list, cancel and choose query adapters for one store (anything with the
    :class:`~dmhelpers.deep_memory.interface.SearchableStore` interface, e.g. :class:`~dmhelpers.VectorStore`)."""

    def __init__(self, store: SearchableStore) -> None:
        self.store = store
        self.models = store.models
        self._threads: dict[str, threading.Thread] = {}
        self._stop: dict[str, threading.Event] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._active: tuple[str, dict[str, Any]] | None = None  # (job id, adapter weights and gate settings)
        self._unusable = ""  # why the stored active model was not loaded, when it says so itself
        self._load_active()

    # ------------------------------------------------------------------ models
    def _write_job(self, job: dict[str, Any]) -> None:
        self.models.write(f"{job['id']}/job.json", json_text(job).encode())

    def _read_job(self, job_id: str) -> dict[str, Any]:
        if job_id in self._live:
            return self._live[job_id]
        try:
            if not isinstance(job_id, str) or not job_id.startswith("job-") or "/" in job_id:
                raise FileNotFoundError(job_id)
            return json.loads(self.models.read(f"{job_id}/job.json"))
        except FileNotFoundError:
            known = ", ".join(j["id"] for j in self._all_jobs()) or "none yet"
            raise InputError(f"Unknown job id {job_id!r}. Pass one of this store's jobs "
                             f"(db.deep_memory.list_jobs()): {known}.") from None
        except ValueError as exc:
            raise StoreError(f"The record of job {job_id} is damaged ({exc}). Train a new model.") from exc

    def _all_jobs(self) -> list[dict[str, Any]]:
        jobs = {}
        for key in self.models.keys("/job.json"):
            try:
                jobs[key.split("/")[0]] = json.loads(self.models.read(key))
            except (ValueError, FileNotFoundError):
                continue
        jobs.update(self._live)
        return sorted(jobs.values(), key=lambda j: j["created"])

    def _check_model(self, job: dict[str, Any]) -> None:
        """Refuse a model made for another embedder or another version of the corpus."""
        if job["embedding"] != self.store.embedding.name or job["dimension"] != self.store.embedding.dimension:
            raise StoreError(f"Model {job['id']} was trained for the embedder {job['embedding']!r} "
                             f"({job['dimension']} dimensions), not this store's {self.store.embedding.name!r}. "
                             "Train a new model on this store.")
        if job["fingerprint"] != self.store.fingerprint:
            raise StoreError(f"Model {job['id']} was trained on another version of this corpus (the chunks changed "
                             "since). Train a new model with db.deep_memory.train(...).")

    def _load_active(self) -> None:
        try:
            if not self.models.exists(ACTIVE):
                return
            job = self._read_job(json.loads(self.models.read(ACTIVE))["job_id"])
            self._check_model(job)
            self._active = (job["id"], self._load_model(job))
        except DamagedModelError as exc:  # kept on disk, not used; deep_memory=True says why
            self._active, self._unusable = None, str(exc)
        except Exception:  # damaged or mismatched: kept on disk, not used; deep_memory=True explains why
            self._active = None

    def _load_model(self, job: dict[str, Any]) -> dict[str, Any]:
        """The adapter of a job, refused (:class:`StoreError`) when any of its numbers is NaN, inf or missing."""
        weights = weights_from_bytes(self.models.read(f"{job['id']}/adapter.safetensors"))
        settings = {"alpha": job.get("alpha"), "beta": job.get("beta", 0.0), "alpha_out": job.get("alpha_out", 0.0),
                    "gate": job.get("gate")}
        check_model(job["id"], settings, weights)
        references = weights.pop("gate.references", None)
        values = weights.pop("memory.values", None)
        memory = load_memory(job, weights, self.store)
        return {"weights": weights, "alpha": settings["alpha"], "tau": settings["gate"], "beta": settings["beta"],
                "alpha_out": settings["alpha_out"], "references": references, "values": values, "memory": memory}

    def model_note(self) -> str:
        """After (re)building a store: whether a Deep Memory model trained on it earlier still fits ("" if none)."""
        if not any(j.get("status") == "completed" for j in self._all_jobs()):
            return ""
        if self._active is not None:
            return f"The Deep Memory model {self._active[0]} from notebook 02 still fits: the chunks did not change."
        return ("This store held a Deep Memory model and test questions from notebook 02, made for the chunks it held "
                "before; they do not fit the new chunks. Re-run notebook 02 to write new questions and train again.")

    def summary(self) -> str:
        """The active model in a line: its job, where its memory acts and what its layer does."""
        return model_summary(self._read_job(self._active[0])) if self._active else "none active (plain search only)"

    def get_model(self) -> str | None:
        """The id of the active model's job, or None when deep memory is not trained."""
        return self._active[0] if self._active else None

    def set_model(self, job_id: str) -> None:
        """Make a completed job's model the active one (checked against this store's embedder and corpus)."""
        job = self._current(self._read_job(job_id))
        if job["status"] != "completed":
            raise InputError(f"Job {job_id} is {job['status']}, not completed: only a completed job has a model. "
                             "Choose a completed job (db.deep_memory.list_jobs()), or train again.")
        self._check_model(job)
        self._guard_writable()
        try:
            model = self._load_model(job)
        except DamagedModelError as exc:  # a model record with NaN or inf numbers: says so itself
            raise StoreError(str(exc)) from None
        except Exception as exc:  # missing or damaged adapter.safetensors
            raise StoreError(f"The model files of job {job_id} are missing or damaged ({type(exc).__name__}: {exc}). "
                             "Train a new model, or choose another job.") from exc
        self.models.write(ACTIVE, json.dumps({"job_id": job_id}).encode())
        self._active, self._unusable = (job_id, model), ""

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Apply the active adapter's layer to query vectors (the corpus vectors are never changed); the memory's
        insertions are applied to the results (:meth:`rank`, :meth:`rerank`)."""
        if self._active is None:
            why = ""
            if self.models.exists(ACTIVE):
                why = (f" The stored model cannot be used: {self._unusable}" if self._unusable else
                       " The stored model cannot be used (it does not match this store's embedder or corpus, or its "
                       "files are damaged); retrain.")
            raise DeepMemoryError("deep_memory=True needs a trained model: run db.deep_memory.train(queries=..., "
                                  f"relevance=...) first, or search with deep_memory=False.{why}")
        m = self._active[1]
        out = apply_adapter(m["weights"], vectors, m["alpha"], m["tau"], m["references"], m["beta"], m["values"],
                            m["alpha_out"])
        if not np.all(np.isfinite(out)):  # never search with NaN: the checks on loading should make this unreachable
            raise StoreError(f"The model record of job {self._active[0]} is damaged: it turns questions into NaN or "
                             "infinite vectors. Retrain (db.deep_memory.train(...)), or choose another job "
                             "(db.deep_memory.set_model(...)).")
        return out

    def rank(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """Row positions of the ``k`` chunks deep memory returns for each plain query vector: the layer's
        nearest chunks, with the memory's insertions (:mod:`dmhelpers.deep_memory.insertion`)."""
        rows = self.store.knn(self.transform(vectors), k)[0]
        return rerank_rows(self._active[1]["memory"], vectors, rows)

    def rerank(self, vectors: np.ndarray, moved: np.ndarray, hits: list[list[Any]], k: int) -> list[list[Any]]:
        """``hits`` (search results for ``moved``, the layer's vectors of plain query ``vectors``: :meth:`transform`)
        with the memory's insertions, as :meth:`rank` does for rows."""
        return rerank_hits(self._active[1]["memory"] if self._active else None, vectors, moved, hits, k)

    # ------------------------------------------------------------------ training
    def _guard_writable(self) -> None:
        if self.store.read_only:
            raise StoreError(f"The store at {self.store.path} was opened with read_only=True. Open it with "
                             "read_only=False to train or change the active model.")

    @property
    def _row(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.store.ids)}

    def _validate(self, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
                  minimum: int = MIN_TRAINING_QUESTIONS
                  ) -> tuple[list[str], list[list[int]], list[list[float]]]:
        return validate_questions(queries, relevance, self._row, len(self.store), self.store.path, minimum)

    def train(self, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]], epochs: int = 30,
              learning_rate: float = 3e-3, hidden: int = 0, seed: int = 0, background: bool = False,
              **options: Any) -> str:
        """Train a query adapter; returns the job id. Blocks until done unless ``background=True``.

        Args:
            queries, relevance: questions and, per question, ``(chunk_id, score)`` pairs (scores in [0, 1]).
            epochs: the most epochs to train (the best number is chosen on held-out questions).
            learning_rate: Adam's step size.
            hidden: 0 for the default linear layer, or the hidden size of a small MLP.
            seed: makes the job deterministic.
            background: run in a thread and return at once; follow it with :meth:`status`.
            options: further :class:`~dmhelpers.training.TrainConfig` fields.
        """
        self._guard_writable()
        known = list(TrainConfig.__dataclass_fields__)
        if set(options) - set(known):
            raise InputError(f"Unknown training option(s) {sorted(set(options) - set(known))}. Options: {known}.")
        cfg = TrainConfig(epochs=check_whole("epochs", epochs, 1, hint="Use e.g. EPOCHS = 30."),
                          learning_rate=check_number("learning_rate", learning_rate, 0,
                                                     hint="Use e.g. LEARNING_RATE = 0.003."),
                          hidden=check_whole("hidden", hidden, 0, hint="0 is the linear layer; hidden=64 a small MLP."),
                          seed=check_whole("seed", seed, 0, hint="Use e.g. SEED = 0."), **options)
        check_learning_rate(cfg.learning_rate)
        for name, low in {"batch_size": 1, "folds": 2, "patience": 1, "hard_negatives": 0, "depth": 1,
                          "max_scored": 1}.items():
            check_whole(name, getattr(cfg, name), low, hint=f"The default is {getattr(TrainConfig, name)}.")
        check_number("temperature", cfg.temperature, 0, hint="The default is 0.05.")
        check_number("risk", cfg.risk, 0, 1, hint="The default is 0.001.")
        check_number("z", cfg.z, 0, hint="The default is 3.")
        if cfg.negatives not in ("hard", "trained"):
            raise InputError(f"negatives must be 'hard' or 'trained', got {cfg.negatives!r}. The default is 'hard'.")
        queries, positives, grades = self._validate(queries, relevance)
        check_groups(positives, self.store.ids)
        needed = estimate_peak_bytes(len(queries), len(self.store), sum(map(len, positives)),
                                     self.store.embedding.dimension, cfg)
        free = available_memory()
        if free is not None and needed > free:
            raise InputError(f"Training on {len(queries):,} questions ({sum(map(len, positives)):,} relevant chunks in "
                             f"all) over {len(self.store):,} chunks needs about {needed / 2**30:.1f} GiB of memory, but "
                             f"only {free / 2**30:.1f} GiB is available. Train on fewer questions, pass a smaller "
                             "max_scored=..., or free memory; nothing was written.")
        ids = self.store.ids
        created = dt.datetime.now(dt.timezone.utc)
        job_id = f"job-{created.strftime('%Y%m%d-%H%M%S-%f')}"
        job = {"id": job_id, "status": "training", "created": created.isoformat(), "progress": 0.0, "eta_s": None,
               "embedding": self.store.embedding.name, "dimension": self.store.embedding.dimension,
               "fingerprint": self.store.fingerprint, "n_queries": len(queries), "params": asdict(cfg),
               "trained_chunks": sorted({ids[p] for pos in positives for p in pos}),
               "history": [], "alpha": 0.0, "beta": 0.0, "gate": None, "message": ""}
        self._write_job(job)
        self._live[job_id] = job
        self._stop[job_id] = threading.Event()
        if background:  # follow it with status(job_id)
            thread = threading.Thread(target=self._run, args=(job, queries, positives, grades, cfg), name=job_id,
                                      daemon=True)
            self._threads[job_id] = thread
            thread.start()
        else:
            with progress_bar(total=100, desc=f"Training {job_id}",
                              bar_format="{l_bar}{bar}| {elapsed}<{remaining}") as bar:
                failure = self._run(job, queries, positives, grades, cfg, bar)
            if isinstance(failure, DeepMemoryError):  # a deliberate error (a full disk, divergence) keeps its type
                raise type(failure)(f"Training job {job_id} failed: {failure}") from failure
            if job["status"] == "failed":
                raise DeepMemoryError(f"Training job {job_id} failed: {job['message']}")
        return job_id

    def _run(self, job: dict[str, Any], queries: list[str], positives: list[list[int]], grades: list[list[float]],
             cfg: TrainConfig, bar: tqdm | None = None) -> Exception | None:
        """Train, check, save and activate; returns why the job failed (None when it did not)."""
        start = time.perf_counter()
        failure: Exception | None = None

        def progress(share: float, row: dict[str, float]) -> None:
            job["progress"] = share
            elapsed = time.perf_counter() - start
            job["eta_s"] = elapsed * (1 - share) / share if share > 0 else None
            if bar is not None:
                bar.update(round(100 * share) - bar.n)

        try:
            vectors = self.store.embed_queries(queries)
            negatives = mine_negatives(lambda v, k: self.store.knn(v, k)[0], self.store.embeddings, vectors,
                                       positives, cfg.hard_negatives, cfg.duplicate_threshold)
            with single_threaded():
                result = train_adapter(vectors, np.array(self.store.embeddings), positives, grades, negatives, cfg,
                                       lambda v, k: self.store.knn(v, k)[0], progress, self._stop[job["id"]].is_set)
            weights = dict(result.weights)
            if result.gate < CLOSED and (result.alpha or result.beta or result.alpha_out):
                weights["gate.references"] = vectors  # the gate and the memory compare new questions with these
            if result.beta:
                weights["memory.values"] = memory_values(self.store.embeddings, positives, grades)
            if result.slots:  # the memory: each training question's vector and the chunk it remembers
                weights["memory.keys"] = vectors
                weights["memory.chunks"] = np.array([first_chunk(p, g) for p, g in zip(positives, grades)],
                                                    dtype=np.int64)
            final_check(job["id"], weights, {"alpha": result.alpha, "beta": result.beta, "alpha_out": result.alpha_out,
                                             "gate": result.gate}, vectors, self.store.embeddings, positives,
                        lambda v, k: self.store.knn(v, k)[0], cfg.learning_rate, cfg.seed)
            self.models.write(f"{job['id']}/adapter.safetensors", weights_to_bytes(weights))
            job.update(status="completed", progress=1.0, eta_s=0.0, alpha=result.alpha, beta=result.beta,
                       gate=result.gate, alpha_out=result.alpha_out, epochs_chosen=result.epochs,
                       carried_by=result.carried_by, history=result.history, validation=result.validation,
                       kept_identity=result.kept_identity, message=result.message,
                       slots=[list(x) for x in result.slots], insertion=result.insertion,
                       seconds=round(time.perf_counter() - start, 2))
            self._write_job(job)
            self.set_model(job["id"])
        except Cancelled:
            job.update(status="cancelled", message="Cancelled; the active model is unchanged.")
        except Exception as exc:  # recorded on the job: a failed job never replaces the active model
            job.update(status="failed", message=f"{type(exc).__name__}: {exc}")
            failure = exc
        finally:
            if job["status"] != "completed":
                try:
                    self._write_job(job)
                except StoreError as exc:  # the disk filled up or turned read-only: leave no half-made job behind
                    discard = getattr(self.models, "discard", None)
                    if discard is not None and self.get_model() != job["id"]:
                        discard(job["id"])
                    failure = failure or exc
            self._live.pop(job["id"], None)
        return failure

    def cancel(self, job_id: str) -> bool:
        """Stop a job started with ``background=True``; returns True if it was still running."""
        job = self._read_job(job_id)
        thread = self._threads.get(job_id)
        if job["status"] != "training" or thread is None:
            return False
        self._stop[job_id].set()
        thread.join()
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until a background job ends; returns its record."""
        if job_id in self._threads:
            self._threads[job_id].join(timeout)
        return self._read_job(job_id)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]],
                 top_k: Sequence[int] = TOP_K) -> dict[str, Any]:
        """Recall@k (and MRR@10, nDCG@10) of plain search and, when a model is active, of deep memory, printed in
        the tutorial's format and broken down by seen and new chunks (see :func:`dmhelpers.evaluation.evaluate`)."""
        queries, positives, grades = self._validate(queries, relevance, minimum=1)
        trained = None
        if self._active is not None:
            row = self._row
            trained = {row[c] for c in self._read_job(self._active[0]).get("trained_chunks", []) if c in row}
        return evaluate(self.store, queries, positives, grades, top_k,
                        self.rank if self._active is not None else None, trained)

    # ------------------------------------------------------------------ reporting
    def status(self, job_id: str) -> dict[str, Any]:
        """Print the tutorial's status table for a job and return its record."""
        job = self._current(self._read_job(job_id))
        print(format_status(job))
        return job

    def _current(self, job: dict[str, Any]) -> dict[str, Any]:
        """A copy of a job record; "training" with no live thread here means its process ended mid-training."""
        job = dict(job)
        if job["status"] == "training" and job["id"] not in self._live:
            job["status"] = "interrupted"
        return job

    def list_jobs(self) -> list[dict[str, Any]]:
        """Print one line per job (newest last) and return their records."""
        jobs = [self._current(j) for j in self._all_jobs()]
        active = self.get_model()
        print(f"{'ID':<32} {'STATUS':<11} {'RESULTS':<34} ACTIVE")
        for j in jobs:
            print(f"{j['id']:<32} {j['status']:<11} {result_line(j):<34} {'*' if j['id'] == active else ''}")
        return jobs
