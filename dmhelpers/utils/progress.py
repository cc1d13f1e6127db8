"""Progress bars: widgets in JupyterLab, text in a terminal, none when ``TQDM_DISABLE`` is set (papermill runs).

tqdm's notebook bar (what ``tqdm.auto`` gives in a kernel) ignores ``TQDM_DISABLE`` (tqdm 4.70: only the text
bar reads it), so a saved notebook kept a frozen ``0%`` bar; :func:`progress_bar` honours it for both.
"""
from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def progress_disabled() -> bool:
    """True when ``TQDM_DISABLE`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes"}


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm.auto.tqdm(...)``, off when ``disable`` or ``TQDM_DISABLE``."""
    return tqdm(*args, disable=disable or progress_disabled(), **kwargs)
