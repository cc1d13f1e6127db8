"""Small things notebooks need that are not the lesson: stopping on a misspelled papermill parameter, and showing
chunks and search results as readable text (and an HTML table side by side)."""
from __future__ import annotations

import ast
import difflib
import html
import itertools
import textwrap
from collections.abc import Sequence

from dmhelpers.utils.errors import InputError


def _assigned(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def check_parameters() -> None:
    """Stop at once when papermill was given a parameter this notebook does not have.

    papermill injects a cell starting ``# Parameters`` right after the notebook's ``parameters`` cell and does
    not check the names: ``-p MAXPAGES 5`` would be ignored and the run would silently use ``MAX_PAGES``'s
    default. This reads both cells from IPython's history and names the unknown parameter and the closest one.
    Outside papermill (no injected cell) it does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    history: list[str] = list(shell.user_ns.get("In", [])) if shell is not None else []
    for j in range(len(history) - 1, 0, -1):
        if history[j].lstrip().startswith("# Parameters"):
            known, given = _assigned(history[j - 1]), _assigned(history[j])
            unknown = sorted(given - known)
            if unknown:
                hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1))
                         else name for name in unknown]
                raise InputError(f"This notebook has no parameter {', '.join(hints)}. Its parameters are "
                                 f"{', '.join(sorted(known))}; check the spelling of -p NAME VALUE.")
            return


def show_text(text: str, width: int = 100, max_lines: int = 14) -> None:
    """Print a chunk as readable text: its lines wrapped at ``width``, at most ``max_lines`` of them."""
    lines = [wrapped for line in text.splitlines() if line.strip()
             for wrapped in textwrap.wrap(line, width, subsequent_indent="  ")]
    print("\n".join(lines[:max_lines]) + ("\n[...]" if len(lines) > max_lines else ""))


def _snippet(text: str, length: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[:length - 1].rstrip() + "…"


class SideBySide:
    """Two ranked lists of chunks next to each other: an HTML table in JupyterLab, plain text elsewhere.

    ``rows`` are ``(title, [(source, text, is_relevant), ...])`` for the left and the right column.
    """

    def __init__(self, left: tuple[str, Sequence[tuple[str, str, bool]]],
                 right: tuple[str, Sequence[tuple[str, str, bool]]], snippet: int = 160) -> None:
        self.left, self.right, self.snippet = left, right, snippet

    def _cells(self) -> list[tuple[str, str]]:
        return list(itertools.zip_longest(self.left[1], self.right[1], fillvalue=("", "", False)))

    def _repr_html_(self) -> str:
        def cell(hit: tuple[str, str, bool]) -> str:
            source, text, relevant = hit
            mark = "<b>✔ relevant</b> " if relevant else ""
            return (f"<td style='text-align:left;vertical-align:top'>{mark}<code>{html.escape(source)}</code><br>"
                    f"{html.escape(_snippet(text, self.snippet))}</td>")

        head = (f"<tr><th>#</th><th style='text-align:left'>{html.escape(self.left[0])}</th>"
                f"<th style='text-align:left'>{html.escape(self.right[0])}</th></tr>")
        rows = "".join(f"<tr><td style='vertical-align:top'>{i}</td>{cell(a)}{cell(b)}</tr>"
                       for i, (a, b) in enumerate(self._cells(), 1))
        return f"<table>{head}{rows}</table>"

    def __repr__(self) -> str:
        lines = []
        for i, (a, b) in enumerate(self._cells(), 1):
            for title, (source, _, relevant) in ((self.left[0], a), (self.right[0], b)):
                lines.append(f"{i:>2}. {title:<13} {'*' if relevant else ' '} {source}")
        return "\n".join(lines)

