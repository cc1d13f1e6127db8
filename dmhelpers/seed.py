"""The one seed helper: Python's, NumPy's and torch's generators from one number."""
from __future__ import annotations

import numbers
import os
import random

import numpy as np


def set_random_seed(seed: int) -> None:
    """Seed ``random``, NumPy and (if installed) torch, so a rerun prints the same tables."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        from dmhelpers.errors import InputError

        raise InputError(f"SEED must be a whole number from 0 to 2**32 - 1, got {seed!r}. Use e.g. SEED = 0.")
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this process's hashing is already fixed
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
