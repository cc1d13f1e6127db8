"""The knobs of a Deep Memory training job and what it returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SLOTS = (1, 3, 10)  # ranks the memory can put a remembered chunk at, most confident first
FLOORS = (0.7, 0.7, 0.6)  # the lowest similarity each slot may open at (cosine, all-MiniLM-L6-v2 questions)
MIN_TRAINING_QUESTIONS = 10  # the fewest a job accepts: it holds some out to choose its settings


@dataclass
class TrainConfig:
    """Knobs of one training job (the defaults train in seconds on 2 CPU cores)."""

    epochs: int = 30  # the most epochs; cross-validation picks the number
    learning_rate: float = 3e-3
    batch_size: int = 64
    hidden: int = 0  # 0: linear residual layer; > 0: an MLP with this many hidden units
    temperature: float = 0.05
    hard_negatives: int = 30
    negatives: str = "hard"  # "hard": in-batch and hard negatives; "trained": every chunk labelled in training
    duplicate_threshold: float = 0.95  # a "negative" this similar to a positive is treated as a likely positive
    folds: int = 4  # grouped cross-validation folds
    patience: int = 5  # stop when the best held-out setting has not improved for this many epochs
    depth: int = 128  # held-out ranks are exact within each question's plain top ``depth`` and the trained chunks
    alphas_out: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)  # strengths of the layer outside the gate
    floors: tuple[float, ...] = FLOORS  # the lowest similarity at which the memory may insert at rank 1, 3, 10
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)  # strengths of the layer near training questions (behind the gate)
    betas: tuple[float, ...] = (0.0,)  # strengths of a gated blend toward remembered chunks (off: see floors)
    risk: float = 1e-3  # the chance a question about a new chunk may open the gate
    z: float = 3.0  # outside the gate: improved minus worsened held-out questions, in coin-flip standard deviations
    max_scored: int = 1000  # held-out questions of each kind scored per epoch (a seeded sample of the rest)
    seed: int = 0


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    alpha: float
    gate: float
    beta: float
    epochs: int
    history: list[dict[str, float]]
    alpha_out: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)
    kept_identity: bool = False
    carried_by: str = ""  # which part carries the gain; "" when plain search is kept
    message: str = ""
    slots: list[tuple[int, float]] = field(default_factory=list)  # where the memory inserts (rank, threshold)
    insertion: dict[str, Any] = field(default_factory=dict)  # the memory's held-out evidence
