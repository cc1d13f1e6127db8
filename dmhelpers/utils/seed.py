"""The one seed helper: Python's, NumPy's and torch's generators from one number."""
from __future__ import annotations

import os
import random

import numpy as np

from dmhelpers.utils.errors import check_whole


def set_random_seed(seed: int) -> None:
    """Seed ``random``, NumPy and (if installed) torch, so a rerun prints the same tables."""
    check_whole("SEED", seed, 0, hint="Use e.g. SEED = 0.", maximum=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this process's hashing is already fixed
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
