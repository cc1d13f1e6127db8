"""``db.deep_memory``: training jobs, model versions and the active model, named as in Deep Lake.

    job_id = db.deep_memory.train(queries=questions, relevance=relevance)
    db.deep_memory.status(job_id); db.deep_memory.list_jobs(); db.deep_memory.cancel(job_id)
    db.deep_memory.get_model(); db.deep_memory.set_model(job_id)
    db.search(question, k=10, deep_memory=True)

Each job lives in ``<store>/deep_memory/<job_id>/``: ``job.json`` (status, parameters, history, metrics) and,
once completed, ``adapter.safetensors``. ``deep_memory/ACTIVE`` names the active model and is replaced
atomically, so a failed, cancelled or interrupted job never replaces it.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from dmhelpers.adapter import CLOSED, apply_adapter, load_weights, memory_values, save_weights
from dmhelpers.errors import DeepMemoryError, InputError, StoreError
from dmhelpers.files import atomic_write_json
from dmhelpers.metrics import TOP_K, retrieval_metrics
from dmhelpers.training import (Cancelled, TrainConfig, available_memory, estimate_peak_bytes, single_threaded,
                                train_adapter)

if TYPE_CHECKING:
    from dmhelpers.store import VectorStore

FOLDER = "deep_memory"
ACTIVE = "ACTIVE"


class DeepMemory:
    """Train, list, cancel and choose query adapters for one :class:`~dmhelpers.VectorStore`."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self.folder = store.path / FOLDER
        self._threads: dict[str, threading.Thread] = {}
        self._stop: dict[str, threading.Event] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._active: tuple[str, dict[str, Any]] | None = None  # (job id, adapter weights and gate settings)
        self._load_active()

    # ------------------------------------------------------------------ models
    def _job_file(self, job_id: str) -> Path:
        return self.folder / job_id / "job.json"

    def _read_job(self, job_id: str) -> dict[str, Any]:
        if job_id in self._live:
            return self._live[job_id]
        try:
            return json.loads(self._job_file(job_id).read_text())
        except (FileNotFoundError, TypeError):  # TypeError: job_id is not a string
            known = ", ".join(j["id"] for j in self._all_jobs()) or "none yet"
            raise InputError(f"Unknown job id {job_id!r}. Pass one of this store's jobs "
                             f"(db.deep_memory.list_jobs()): {known}.") from None
        except ValueError as exc:
            raise StoreError(f"The record of job {job_id} is damaged ({exc}). Train a new model.") from exc

    def _all_jobs(self) -> list[dict[str, Any]]:
        jobs = {}
        if self.folder.is_dir():
            for f in sorted(self.folder.glob("*/job.json")):
                try:
                    jobs[f.parent.name] = json.loads(f.read_text())
                except ValueError:
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
        pointer = self.folder / ACTIVE
        if not pointer.exists():
            return
        try:
            job = self._read_job(json.loads(pointer.read_text())["job_id"])
            self._check_model(job)
            self._active = (job["id"], self._load_model(job))
        except Exception:  # damaged or mismatched: kept on disk, not used; deep_memory=True explains why
            self._active = None

    def _load_model(self, job: dict[str, Any]) -> dict[str, Any]:
        weights = load_weights(self.folder / job["id"] / "adapter.safetensors")
        references = weights.pop("gate.references", None)
        values = weights.pop("memory.values", None)
        return {"weights": weights, "alpha": job["alpha"], "tau": job.get("gate"), "beta": job.get("beta", 0.0),
                "alpha_out": job.get("alpha_out", 0.0), "references": references, "values": values}

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
        except Exception as exc:  # missing or damaged adapter.safetensors
            raise StoreError(f"The model files of job {job_id} are missing or damaged ({type(exc).__name__}: {exc}). "
                             "Train a new model, or choose another job.") from exc
        atomic_write_json(self.folder / ACTIVE, {"job_id": job_id})
        self._active = (job_id, model)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Apply the active adapter to query vectors (the corpus vectors are never changed)."""
        if self._active is None:
            why = ""
            if (self.folder / ACTIVE).exists():
                why = (" The stored model cannot be used (it does not match this store's embedder or corpus, or its "
                       "files are damaged); retrain.")
            raise DeepMemoryError("deep_memory=True needs a trained model: run db.deep_memory.train(queries=..., "
                                  f"relevance=...) first, or search with deep_memory=False.{why}")
        m = self._active[1]
        return apply_adapter(m["weights"], vectors, m["alpha"], m["tau"], m["references"], m["beta"], m["values"],
                             m["alpha_out"])

    # ------------------------------------------------------------------ training
    def _guard_writable(self) -> None:
        if self.store.read_only:
            raise StoreError(f"The store at {self.store.path} was opened with read_only=True. Open it with "
                             "read_only=False to train or change the active model.")

    @property
    def _row(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.store.ids)}

    def _validate(self, queries: Sequence[str], relevance: Sequence[Sequence[tuple[str, float]]], minimum: int = 10
                  ) -> tuple[list[str], list[list[int]], list[list[float]]]:
        if isinstance(queries, str):
            raise InputError("queries must be a list of questions, not a single string.")
        queries, relevance = list(queries), list(relevance)
        if not queries:
            raise InputError("Got no queries. Generate questions first (notebook 02).")
        if len(queries) != len(relevance):
            raise InputError(f"Got {len(queries)} queries but {len(relevance)} relevance lists; pass one list of "
                             "(chunk_id, score) pairs per query.")
        if len(self.store) == 0:
            raise StoreError(f"The store at {self.store.path} has no chunks. Build it first (notebook 01).")
        row = self._row
        positives, grades = [], []
        for n, (q, rel) in enumerate(zip(queries, relevance)):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"Query {n} is empty: every query must be a non-empty question.")
            if not rel:
                raise InputError(f"Query {n} has no relevant chunks: give at least one (chunk_id, score) pair.")
            pos, sc = [], []
            for pair in rel:
                try:
                    if isinstance(pair, str) or len(pair) != 2:
                        raise ValueError
                    cid, score = pair
                    score = float(score)
                except (TypeError, ValueError):
                    raise InputError(f"Relevance of query {n} must be (chunk_id, score) pairs, got {pair!r}.") from None
                if cid not in row:
                    raise InputError(f"Relevance of query {n} names chunk id {cid!r}, which is not in this store. "
                                     "Use ids from db.ids (questions made for another store do not fit).")
                if not 0.0 <= score <= 1.0:
                    raise InputError(f"Relevance score {score} of query {n} is outside [0, 1]. Use 1.0 for relevant, "
                                     "smaller values for partly relevant.")
                if score > 0:
                    pos.append(row[cid])
                    sc.append(score)
            if not pos:
                raise InputError(f"Query {n} has only zero scores: give at least one chunk a score above 0.")
            positives.append(pos)
            grades.append(sc)
        if len(queries) < minimum:
            raise InputError(f"Got {len(queries)} queries: too few to hold out validation questions. Train on at "
                             f"least {minimum} (the tutorial uses 100).")
        return queries, positives, grades

    def _mine_negatives(self, vectors: np.ndarray, positives: list[list[int]], n: int, threshold: float) -> list[list[int]]:
        """Top results of plain search that are not labelled relevant, minus near-duplicates of a positive."""
        labels, _ = self.store.knn(vectors, n + max(len(p) for p in positives))
        corpus = self.store.embeddings
        out = []
        for row, pos in zip(labels, positives):
            cand = row[~np.isin(row, pos)]
            if len(cand):
                dup = (corpus[cand] @ corpus[pos].T).max(axis=1) > threshold
                cand = cand[~dup]
            out.append(cand[:n].tolist())
        return out

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
        try:
            cfg = TrainConfig(epochs=int(epochs), learning_rate=float(learning_rate), hidden=int(hidden),
                              seed=int(seed), **options)
        except (TypeError, ValueError) as exc:
            raise InputError(f"epochs, hidden and seed must be whole numbers and learning_rate a number ({exc}). "
                             "Use e.g. EPOCHS = 30, LEARNING_RATE = 0.003.") from None
        low = {"epochs": 1, "hidden": 0, "batch_size": 1, "folds": 2, "patience": 1, "hard_negatives": 0, "depth": 1,
               "max_scored": 1, "z": 0}
        bad = [f"{k}={getattr(cfg, k)!r}" for k in low if getattr(cfg, k) < low[k]]
        bad += [f"{k}={getattr(cfg, k)!r}" for k in ("learning_rate", "temperature") if not getattr(cfg, k) > 0]
        bad += [f"risk={cfg.risk!r}"] if not 0 < cfg.risk < 1 else []
        if bad:
            raise InputError(f"Invalid training settings {', '.join(bad)}. Use epochs >= 1 (e.g. EPOCHS = 30), "
                             f"learning_rate > 0 (e.g. LEARNING_RATE = 0.003), and for the others at least {low}.")
        queries, positives, grades = self._validate(queries, relevance)
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
        (self.folder / job_id).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self._job_file(job_id), job)
        self._live[job_id] = job
        self._stop[job_id] = threading.Event()
        if background:  # follow it with status(job_id)
            thread = threading.Thread(target=self._run, args=(job, queries, positives, grades, cfg), name=job_id,
                                      daemon=True)
            self._threads[job_id] = thread
            thread.start()
        else:
            with tqdm(total=100, desc=f"Training {job_id}", bar_format="{l_bar}{bar}| {elapsed}<{remaining}") as bar:
                self._run(job, queries, positives, grades, cfg, bar)
            if job["status"] == "failed":
                raise DeepMemoryError(f"Training job {job_id} failed: {job['message']}")
        return job_id

    def _run(self, job: dict[str, Any], queries: list[str], positives: list[list[int]], grades: list[list[float]],
             cfg: TrainConfig, bar: tqdm | None = None) -> None:
        start = time.perf_counter()

        def progress(share: float, row: dict[str, float]) -> None:
            job["progress"] = share
            elapsed = time.perf_counter() - start
            job["eta_s"] = elapsed * (1 - share) / share if share > 0 else None
            if bar is not None:
                bar.update(round(100 * share) - bar.n)

        try:
            vectors = self.store.embedding.embed(queries)
            negatives = self._mine_negatives(vectors, positives, cfg.hard_negatives, cfg.duplicate_threshold)
            with single_threaded():
                result = train_adapter(vectors, np.array(self.store.embeddings), positives, grades, negatives, cfg,
                                       lambda v, k: self.store.knn(v, k)[0], progress, self._stop[job["id"]].is_set)
            weights = dict(result.weights)
            if result.gate < CLOSED and (result.alpha or result.beta or result.alpha_out):
                weights["gate.references"] = vectors  # the gate and the memory compare new questions with these
            if result.beta:
                weights["memory.values"] = memory_values(self.store.embeddings, positives, grades)
            save_weights(self.folder / job["id"] / "adapter.safetensors", weights)
            job.update(status="completed", progress=1.0, eta_s=0.0, alpha=result.alpha, beta=result.beta,
                       gate=result.gate, alpha_out=result.alpha_out, epochs_chosen=result.epochs,
                       carried_by=result.carried_by, history=result.history, validation=result.validation,
                       kept_identity=result.kept_identity, message=result.message,
                       seconds=round(time.perf_counter() - start, 2))
            atomic_write_json(self._job_file(job["id"]), job)
            self.set_model(job["id"])
        except Cancelled:
            job.update(status="cancelled", message="Cancelled; the active model is unchanged.")
        except Exception as exc:  # recorded on the job: a failed job never replaces the active model
            job.update(status="failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            atomic_write_json(self._job_file(job["id"]), job)
            self._live.pop(job["id"], None)

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
        """Recall@k (and MRR@10, nDCG@10) of plain search and, when a model is active, of deep memory.

        Prints the tutorial's format. With a model, also breaks the result down by whether each question's
        relevant chunks were among the chunks the model was trained on ("seen chunks") or not ("new chunks").
        """
        queries, positives, grades = self._validate(queries, relevance, minimum=1)
        ks = list(top_k) if isinstance(top_k, (list, tuple, set, range, np.ndarray)) else []
        if not ks or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise InputError(f"top_k must be a list of positive whole numbers, got {top_k!r}. Use e.g. "
                             "top_k=[1, 3, 5, 10, 50, 100].")
        ks = sorted({int(k) for k in ks})
        scored_ks = [k for k in ks if k <= len(self.store)]  # a store of n chunks has no recall@k for k > n
        start = time.perf_counter()
        vectors = self.store.embedding.embed(queries)
        print(f"Embedding queries took {time.perf_counter() - start:.2f} seconds")
        depth = max(max(ks), 10)
        runs = {"without model": vectors}
        if self._active is not None:
            runs["with model"] = self.transform(vectors)
        else:
            print("No Deep Memory model is active: only plain search is evaluated. Train one with "
                  "db.deep_memory.train(...).")
        ranked = {name: self.store.knn(v, depth)[0] for name, v in runs.items()}
        report: dict[str, Any] = {}
        for name, rows in ranked.items():
            print(f"---- Evaluating {name} ----")
            report[name] = retrieval_metrics(rows, positives, scored_ks, grades)
            for k in scored_ks:
                print(f"Recall@{k}:\t{100 * report[name][f'recall@{k}']:5.1f}%")
        if "with model" in ranked:
            trained = {self._row[c] for c in self._read_job(self._active[0]).get("trained_chunks", [])}
            kinds = {"seen chunks": [i for i, p in enumerate(positives) if set(p) <= trained],
                     "new chunks": [i for i, p in enumerate(positives) if not set(p) <= trained]}
            report["by chunk"] = {
                kind: {"n": len(idx), **{name: retrieval_metrics([rows[i] for i in idx], [positives[i] for i in idx],
                                                                 scored_ks, [grades[i] for i in idx])
                                         for name, rows in ranked.items()}}
                for kind, idx in kinds.items() if idx}
        return report

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
            print(f"{j['id']:<32} {j['status']:<11} {_result(j):<34} {'*' if j['id'] == active else ''}")
        return jobs


def _result(job: dict[str, Any]) -> str:
    val = job.get("validation")
    if job["status"] != "completed" or not val:
        return "not available yet" if job["status"] == "training" else job["status"]
    parts = []
    for name in ("seen", "new"):
        base, model = val["base"].get(name), val["model"].get(name)
        if base:
            change = 100 * (model["recall@10"] - base["recall@10"])
            parts.append(f"{name} {base['recall@10']:.0%} -> {model['recall@10']:.0%} ({change:+.0f} pts)")
    return "recall@10: " + ", ".join(parts)


def format_status(job: dict[str, Any]) -> str:
    """The tutorial's status table: status, progress/eta, recall@10 next to plain search, what the model is."""
    width = 96
    line = "-" * width
    rows = [("status", job["status"])]
    if job["status"] == "training":
        eta = f"eta: {job['eta_s']:.1f} seconds" if job.get("eta_s") is not None else "eta: estimating"
        rows.append(("progress", f"{job['progress']:.0%}, {eta}"))
    rows.append(("results", _result(job)))
    if job.get("validation"):
        v = job["validation"]
        n = ", ".join(f"{count} {kind}-chunk" for kind, count in v["n"].items())
        rows.append(("measured on", f"held-out training questions: {n}"))
        tau = job.get("gate")
        gate = ("no gate" if tau is None else "closed" if tau >= CLOSED else f"opens above similarity {tau:.2f}")
        epochs = job.get("epochs_chosen", 0)
        rows.append(("gate", gate))
        rows.append(("model", f"behind the gate: layer {job['alpha']:.1f}, memory {job.get('beta', 0.0):.1f}; "
                              f"outside it: layer {job.get('alpha_out', 0.0):.2f}; {epochs} epoch{'s' * (epochs != 1)}"))
        rows.append(("gain from", job.get("carried_by") or "nothing: plain search is kept"))
    out = [line, f"|{job['id']:^{width - 2}}|", line]
    for key, value in rows:
        out.append(f"| {key:<11} | {value:<{width - 18}} |")
        out.append(line)
    return "\n".join(out)
