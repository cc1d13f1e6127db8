"""The query adapter: a residual layer on query embeddings, ``q' = normalise(q + alpha * g(q) * f(q))``.

``f`` is a linear map (default) or a small MLP, with its last layer initialised at zero, so training
starts from the identity (plain search). ``alpha`` and the gate ``g`` are chosen on held-out questions.
Inference runs in NumPy: one small matrix product per query, no torch call on the search path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load, save
from torch import nn

from dmhelpers.files import atomic_write_bytes


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


def gate(similarity: np.ndarray, tau: float | None) -> np.ndarray:
    """How much to trust the layer for questions with this highest similarity to a training question."""
    if tau is None:
        return np.ones_like(similarity, dtype=np.float32)
    return np.clip((similarity - tau) / GATE_WIDTH, 0.0, 1.0).astype(np.float32)


def apply_adapter(weights: dict[str, np.ndarray], q: np.ndarray, alpha: float, tau: float | None = None,
                  references: np.ndarray | None = None) -> np.ndarray:
    """``normalise(q + alpha * g(q) * f(q))`` in NumPy: the search path of ``deep_memory=True``.

    ``g`` is :func:`gate` of each question's highest cosine similarity to ``references`` (the training
    questions), or 1 when ``tau`` is None.
    """
    q = np.asarray(q, dtype=np.float32)
    if alpha == 0.0:
        return q
    scale = alpha if tau is None else alpha * gate((q @ references.T).max(axis=1), tau)[:, None]
    out = q + scale * adapter_delta(weights, q)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def save_weights(path: str | Path, weights: dict[str, np.ndarray]) -> None:
    """Write weights as safetensors, atomically (never a pickle)."""
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in weights.items()}))


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Read safetensors weights (no code is executed when loading)."""
    return load(Path(path).read_bytes())
