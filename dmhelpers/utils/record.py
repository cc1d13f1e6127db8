"""Record a notebook's results in its own outputs, and read them back from an executed notebook (for tests)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MIMETYPE = "application/vnd.dmhelpers.record+json"
DIGITS = 4  # recorded floats keep this many decimals (and significant digits): no float32 noise of another CPU or BLAS


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """``value`` with every float in it (in lists, tuples and dicts too) rounded to ``digits`` decimals, or to
    ``digits`` significant digits for a number below ``10**-digits`` (a tiny cost in dollars stays non-zero)."""
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return value
        return round(value, max(digits, digits - 1 - math.floor(math.log10(abs(value)))))
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def record(**values: Any) -> None:
    """Store ``values`` in the notebook's outputs, for tests and ``make run``'s summary (:func:`read_records`).

    Quietly: the output has only this JSON type, which JupyterLab and GitHub do not draw, so students see nothing.
    Floats are rounded to :data:`DIGITS` decimals, so the committed notebooks hold the same record on every
    machine (nbval compares them exactly).
    """
    from IPython.display import display

    values = rounded(values)
    json.dumps(values)  # fail here, not in the reader, if a value is not JSON
    display({MIMETYPE: values}, raw=True)


def read_records(notebook: str | Path) -> dict[str, Any]:
    """All values recorded by :func:`record` in an executed notebook, later ones overriding earlier."""
    nb = json.loads(Path(notebook).read_text("utf-8"))
    found: dict[str, Any] = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if MIMETYPE in data:
                found.update(data[MIMETYPE])
    return found
