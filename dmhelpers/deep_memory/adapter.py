"""The query adapter's layer on query embeddings (the memory that carries *which chunks people ask about* is a rank
insertion on the results: :mod:`dmhelpers.deep_memory.insertion`)::

    q' = normalise(q + g(q) * (alpha * f(q) + beta * m(q)) + (1 - g(q)) * alpha_out * f(q))


- ``f`` is a trained residual layer: a linear map (default) or a small MLP, with its last layer initialised at
  zero, so training starts from the identity (plain search). It learns a better question-to-text match.
- ``m`` is a blend toward the training questions' chunks: attention with the training questions' vectors as keys
  and their relevant chunks' vectors as values, ``m(q) = softmax(q . K / MEMORY_TEMPERATURE) @ V``. It is off by
  default (``betas=(0.0,)``): it moves the whole ranking of a question wrongly taken for a repeat, where the
  insertion moves each result one place at most.
- ``g`` is a gate that trusts both only near what was trained on: it rises from 0 to 1 as the question's
  highest cosine similarity to a training question rises past ``tau`` (``tau = CLOSED``: it never opens).
- Outside the gate the layer acts with ``alpha_out``, which is 0 (plain search) unless it was shown to help
  questions about chunks nobody asked about in training.

``alpha``, ``beta``, ``alpha_out`` and ``tau`` are chosen on held-out questions (see
:mod:`dmhelpers.deep_memory.selection`). Inference runs
in NumPy: a few small matrix products per query, no torch call on the search path.
"""
from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import load, save
from torch import nn



class QueryAdapter(nn.Module):
    """``f(q)``: linear (``hidden=0``) or a one-hidden-layer MLP; the output layer starts at zero."""

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.net = nn.Linear(dim, dim, bias=False) if hidden == 0 else nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim, bias=False))
        last = self.net if hidden == 0 else self.net[-1]
        nn.init.zeros_(last.weight)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(q + self.net(q), dim=-1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays (for safetensors and the NumPy inference path)."""
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.state_dict().items()}


def adapter_delta(weights: dict[str, np.ndarray], q: np.ndarray) -> np.ndarray:
    """``f(q)`` in NumPy, for weights from :meth:`QueryAdapter.to_arrays`."""
    if "net.weight" in weights:
        return q @ weights["net.weight"].T
    h = np.maximum(q @ weights["net.0.weight"].T + weights["net.0.bias"], 0.0)
    return h @ weights["net.2.weight"].T


GATE_WIDTH = 0.1  # the gate rises from 0 to 1 over this much cosine similarity above tau
CLOSED = 1.0  # a gate at this similarity never opens
MEMORY_TEMPERATURE = 0.05  # the memory's attention: a training question 0.05 more similar weighs e times more


def gate(similarity: np.ndarray, tau: float | None) -> np.ndarray:
    """How much to trust the layer for questions with this highest similarity to a training question."""
    if tau is None:
        return np.ones_like(similarity, dtype=np.float32)
    if tau >= CLOSED:
        return np.zeros_like(similarity, dtype=np.float32)
    return np.clip((similarity - tau) / GATE_WIDTH, 0.0, 1.0).astype(np.float32)


def memory_values(corpus: np.ndarray, positives: list[list[int]], grades: list[list[float]]) -> np.ndarray:
    """Per training question, the grade-weighted mean vector of its relevant chunks (normalised): ``V`` of ``m``."""
    values = np.stack([np.average(corpus[p], axis=0, weights=g) for p, g in zip(positives, grades)])
    return (values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def memory(q: np.ndarray, keys: np.ndarray, values: np.ndarray, similarity: np.ndarray | None = None) -> np.ndarray:
    """``m(q)``: attention over the training questions (``keys``) onto their chunks (``values``).

    ``similarity`` is ``q @ keys.T`` when the caller already has it.
    """
    s = q @ keys.T if similarity is None else similarity
    w = np.exp((s - s.max(axis=1, keepdims=True)) / MEMORY_TEMPERATURE)
    return (w / w.sum(axis=1, keepdims=True)) @ values


def apply_adapter(weights: dict[str, np.ndarray], q: np.ndarray, alpha: float, tau: float | None = None,
                  references: np.ndarray | None = None, beta: float = 0.0,
                  values: np.ndarray | None = None, alpha_out: float = 0.0) -> np.ndarray:
    """``normalise(q + g(q) * (alpha * f(q) + beta * m(q)) + (1 - g(q)) * alpha_out * f(q))`` in NumPy: the search
    path of ``deep_memory=True``.

    ``references`` are the training questions' vectors (the gate's and the memory's keys), ``values`` their
    chunks' (see :func:`memory_values`). ``g`` is :func:`gate` of each question's highest similarity to a
    reference, or 1 when ``tau`` is None.
    """
    q = np.asarray(q, dtype=np.float32)
    if alpha == 0.0 and beta == 0.0 and alpha_out == 0.0:
        return q
    closed = tau is not None and tau >= CLOSED
    if closed or (alpha == 0.0 and beta == 0.0):
        if not alpha_out:
            return q
        if closed:
            changed = q + alpha_out * adapter_delta(weights, q)
            return changed / np.maximum(np.linalg.norm(changed, axis=1, keepdims=True), 1e-12)
    similarity = q @ references.T if references is not None and (tau is not None or beta) else None
    if tau is None:
        rows, g = slice(None), np.float32(1.0)
    elif alpha_out:  # every question changes: those outside the gate through the layer alone
        rows, g = slice(None), gate(similarity.max(axis=1), tau)[:, None]
    else:  # only questions near a training question change; the rest skip the layer and the memory
        g_all = gate(similarity.max(axis=1), tau)
        rows = np.flatnonzero(g_all)
        if not len(rows):
            return q
        g, similarity = g_all[rows, None], similarity[rows]
    part = q[rows]
    f = adapter_delta(weights, part) if (alpha or alpha_out) else 0.0
    delta = g * (alpha * f + (beta * memory(part, references, values, similarity) if beta else 0.0))
    if alpha_out:
        delta = delta + (1 - g) * alpha_out * f
    changed = part + delta
    out = q.copy()
    out[rows] = changed / np.maximum(np.linalg.norm(changed, axis=1, keepdims=True), 1e-12)
    return out


def weights_to_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """Weights as safetensors bytes (never a pickle), for a model repository to store."""
    return save({k: np.ascontiguousarray(v) for k, v in weights.items()})


def weights_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Weights from safetensors bytes (no code is executed when loading)."""
    return load(data)
