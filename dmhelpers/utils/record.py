"""Record a notebook's results in its own outputs, and read them back from an executed notebook (for tests)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MIMETYPE = "application/vnd.dmhelpers.record+json"


def record(**values: Any) -> None:
    """Show ``values`` in the notebook and store them as a JSON output that :func:`read_records` finds."""
    from IPython.display import display

    json.dumps(values)  # fail here, not in the reader, if a value is not JSON
    text = "Recorded: " + ", ".join(f"{k}={v!r}" for k, v in values.items())
    display({MIMETYPE: values, "text/plain": text}, raw=True)


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
