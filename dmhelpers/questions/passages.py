"""What a chat model is asked about: the passages of a chunk a user could have a question about.

A documentation chunk mixes what people ask about (a function and what it does, a paragraph of prose) with what
nobody asks about (lists of dunder methods, class hierarchies, grammar rules, "Changed in version" notes). A small
model shown a whole chunk writes a generic question about the page; shown one documented sentence it writes a
question about that sentence. :func:`passages` splits a chunk into (name, sentence) pairs and ranks them, so that
the ``nth`` question about a chunk asks about its ``nth`` passage: repeat questions about one chunk ask different
things, the way different people would.
"""
from __future__ import annotations

import re
from typing import NamedTuple

MIN_WORDS = 6  # a sentence with fewer plain words has nothing to ask about
REWORDINGS = 3  # questions about a chunk's first passage before others are asked about
MAX_CHARS = 240  # a sentence is cut here (the first sentence of a long description carries its point)

PROSE = re.compile(r"\b[A-Za-z][a-z]+\b")
SIGNATURE = re.compile(r"^([A-Za-z_][\w.]*)\s*(=.*|\(.*)?$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s")
# Descriptions nobody asks about: pydoc's own boilerplate, inherited-member headers, version notes, footnotes.
BOILERPLATE = re.compile(
    r"^(Initialize self|Implement |Return (str|repr|hash)\(self|Return getattr|Return self|Create and return a new "
    r"object|See help\(|Helper for pickle|Method resolution order|Data descriptors defined here|Methods defined here|"
    r"Data and other attributes|Static methods|Class methods|Methods inherited|Readonly properties|dictionary for "
    r"instance variables|list of weak references|Changed in version|New in version|Added in version|Deprecated|"
    r"Keyword Arguments|The module contains the following|Lib/|class |\[\d+\]|\\?-)", re.I)
# A long identifier list (class trees, "Data:" tables) or a grammar rule is not prose.
LISTING = re.compile(r"::=|(?:\b[\w]+\.[\w.]+\b.*){3}")


class Passage(NamedTuple):
    """One thing a chunk documents: the name it is documented under (None for prose) and its first sentence."""

    name: str | None
    sentence: str


def _first_sentence(description: str) -> str:
    return SENTENCE_END.split(description, maxsplit=1)[0][:MAX_CHARS]


def _askable(sentence: str) -> bool:
    """Enough plain words, mostly prose, and not boilerplate or a listing."""
    words = sentence.split()
    prose = PROSE.findall(sentence)
    return (len(prose) >= MIN_WORDS and len(prose) >= 0.6 * len(words) and not BOILERPLATE.match(sentence)
            and not LISTING.search(sentence) and not sentence.startswith(("#", ">>>")) and not sentence.endswith(":"))


def _split(text: str) -> list[tuple[str | None, str]]:
    """(name, description) pairs in the order they appear: a signature line starts a named description, a blank
    line ends a paragraph of prose."""
    out: list[tuple[str | None, str]] = []
    name: str | None = None
    lines: list[str] = []

    def flush() -> None:
        description = " ".join(" ".join(lines).split())
        if description and not (name or "").startswith("_"):
            out.append((name, description))

    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped in ("---", "* * *"):
            if name is None and lines:
                flush()
                lines = []
            continue
        if (not line.startswith((" ", "\t")) and len(stripped) < 120 and ("(" in stripped or "=" in stripped)
                and SIGNATURE.match(stripped)):
            flush()
            name, lines = stripped.split("(")[0].split(" =")[0].strip(), []
            continue
        stripped = stripped.lstrip("| ")
        if stripped and not BOILERPLATE.match(stripped):
            lines.append(stripped)
    flush()
    return out


def passages(text: str) -> list[Passage]:
    """The chunk's askable passages, best first: documented names (a function and what it does) before prose, each
    group in the order of the chunk. Repeated sentences are kept once."""
    found, seen = [], set()
    for name, description in _split(text):
        sentence = _first_sentence(description)
        if _askable(sentence) and sentence.lower() not in seen:
            seen.add(sentence.lower())
            found.append(Passage(name, sentence))
    return sorted(found, key=lambda p: p.name is None)  # stable: each group keeps the chunk's order


def plan(found: list[Passage], per_chunk: int) -> list[tuple[Passage, int]]:
    """What each of ``per_chunk`` questions about a chunk asks: ``(passage, variant)``, variant 0 the model's own
    question about it, variant v > 0 another person's wording of the same need (sampled with seed v).

    Real repeat questions about one document are mostly rewordings of one need (:mod:`.variety`): the first
    three questions word the chunk's first passage three ways; any further ones move on to its next passages."""
    if not found:
        return []
    steps = [(found[0], v) for v in range(min(per_chunk, REWORDINGS))]
    rest = iter(found[1:])
    while len(steps) < per_chunk:
        nxt = next(rest, None)
        steps.append((nxt, 0) if nxt is not None else (found[0], len(steps)))
    return steps
