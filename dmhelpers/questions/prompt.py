"""The prompt that asks a chat model for one question about one passage, and the checks on its reply.

The model sees the page's title, the name a passage is documented under and its first sentence, after four worked
examples from libraries the corpus does not contain, and is asked for the question a programmer would type into
the search box when they need what the sentence describes. Small models need that focus: shown a whole chunk,
SmolLM2-135M writes a generic question about the page (measurements: ``docs/questions.md``).

A reply is the first line of the model's answer, cut after its first question mark (small models run on with an
answer). It is rejected, and asked again, when it is no question, copies its chunk, a placeholder or a worked
example, points at "this" or "them", names an API its chunk does not mention, or shares no word with the passage
it is about.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from dmhelpers.questions.passages import Passage
from dmhelpers.questions.simulate import STOPWORDS, normalise_question

COPIED_WORDS = 10  # a question with this many consecutive words of its chunk copies the chunk
ECHO_WORDS = 4  # a question with this many consecutive words of a worked example (not in its own chunk) echoes it
MIN_WORDS, MAX_WORDS = 4, 30  # a reply outside this range is a fragment or an answer, not a search question

SYSTEM_PROMPT = (
    "You are a Python programmer searching the documentation. Read the sentence from the documentation and write "
    "the short question you would type into the search box when you need what it describes. Use your own words. "
    "Do not answer it. Reply with the question only."
)
# Worked examples: (page, documented name or None for prose, sentence, question). None is from the corpus we ship.
EXAMPLES = (
    ("numpy", "numpy.unique",
     "Find the unique elements of an array, optionally with the number of times each one appears.",
     "How do I count how often each value occurs in an array?"),
    ("requests", "Session.get",
     "Sends a GET request; timeout is the number of seconds to wait for the server to answer.",
     "How can I make a request give up when the server is slow?"),
    ("PIL.Image", "Image.thumbnail", "Make this image into a thumbnail, no larger than the given size.",
     "How can I shrink a picture to fit in a box?"),
    ("Python language reference", None,
     "A break statement ends the loop at once, and the loop's else clause is skipped.",
     "What happens to the else block of a loop when I break out of it?"),
)
PLACEHOLDERS = {"", "question", "your question", "your question here", "the question"}
LABELS = ("Page:", "Name:", "Sentence:")
PREAMBLE = re.compile(r"(?<=[.!:])\s+(?=[A-Z])")  # "Sure! How do I ...?": the question is the last sentence
# Words any question about Python documentation may use: sharing only these with a passage is not being about it.
GENERIC = frozenset("""python function method module class object value return create check make code type data
string number list call work argument parameter example default""".split())


def page_name(title: str) -> str:
    """A page title as the prompt shows it: "Python: module calendar" -> "module calendar"."""
    return re.sub(r"^Python:\s*", "", " ".join(str(title or "").split()))


def show(page: str, passage: Passage) -> str:
    """What the model reads about one passage."""
    name = f"Name: {passage.name}\n" if passage.name else ""
    return f"Page: {page or 'documentation'}\n{name}Sentence: {passage.sentence}"


def messages_for(page: str, passage: Passage) -> list[dict[str, str]]:
    """The chat messages asking for a question about ``passage``: instructions, the worked examples, the passage."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for example_page, name, sentence, question in EXAMPLES:
        messages += [{"role": "user", "content": show(example_page, Passage(name, sentence))},
                     {"role": "assistant", "content": question}]
    return messages + [{"role": "user", "content": show(page, passage)}]


# Identifies the prompt in the question cache: a changed prompt writes new questions rather than reusing old ones.
PROMPT_SHA = hashlib.sha256(json.dumps([SYSTEM_PROMPT, EXAMPLES, "page-name-sentence/plain-text/plan-2",
                                         sorted(GENERIC)]).encode()).hexdigest()[:12]


def parse_reply(content: str | None) -> tuple[str | None, str]:
    """The question in a model's reply, or None and why not: the first line with a question mark, cut after it,
    without a preamble before it ("Sure! How do I ...?" -> "How do I ...?")."""
    lines = [line.strip() for line in (content or "").strip().split("\n") if line.strip()]
    if not lines:
        return None, "empty reply"
    asking = [line for line in lines if "?" in line]
    if not asking:
        return None, f"no question mark: {lines[0][:80]!r}"
    line = re.sub(r"^(?:Question:\s*|Q:\s*|[-*]\s+)", "", asking[0]).strip().strip('"\'`').strip()
    question = PREAMBLE.split(line[:line.index("?") + 1])[-1]
    question = " ".join(question.split()).lstrip('"\'`')
    n = len(question.split())
    if not MIN_WORDS <= n <= MAX_WORDS:
        return None, f"{n} words, not a search question: {question[:80]!r}"
    return question, ""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _runs(words: Sequence[str], length: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + length]) for i in range(len(words) - length + 1)}


# The examples' own wording, past each question's opening ("How do I count"), which any question may share.
_EXAMPLE_RUNS = set().union(*(_runs(_words(q)[4:], ECHO_WORDS) | _runs(_words(s), ECHO_WORDS)
                              for _, _, s, q in EXAMPLES))
_EXAMPLE_QUESTIONS = {normalise_question(q) for *_, q in EXAMPLES}


# "Can I use this in a loop?", "How do I implement them?": a search question has no context to point into.
POINTING = re.compile(r"\b(?:this|these|those|them)\b", re.I)
# An API a question names: `in backticks`, called(), or dotted.name; small models invent them ("formatstring()").
NAMED = re.compile(r"`([^`\s]+)`|\b([A-Za-z_][\w.]*)\(\)|\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\b")


def _named(question: str) -> list[str]:
    names = [next(g for g in m.groups() if g) for m in NAMED.finditer(question)]
    return [n.strip("().") for n in names if n.strip("().")]


def _stems(text: str) -> set[str]:
    """Five-letter stems of the words that can tie a question to a passage ("argumentparser" yes, "arguments" no)."""
    return {w[:5] for w in re.findall(r"[a-z]{4,}", text.lower())
            if w not in STOPWORDS and w not in GENERIC and w[:-1] not in GENERIC}


def rejected(question: str, chunk: str, passage: Passage | None = None, page: str = "") -> str:
    """Why ``question`` is not a question about its passage (a placeholder, a worked example or its wording, a
    copy of the chunk, a leaked prompt label, "this" or "them" with nothing to refer to, an API its chunk does not
    mention, no word in common with the passage), or "" if it is one."""
    if " ".join(_words(question)) in PLACEHOLDERS:
        return f"copied the placeholder: {question!r}"
    if normalise_question(question) in _EXAMPLE_QUESTIONS:
        return f"copied a worked example's question: {question[:80]!r}"
    if any(label in question for label in LABELS):
        return f"repeated the prompt's labels: {question[:80]!r}"
    words, text = _words(question), _words(chunk)
    if _runs(words, COPIED_WORDS) & _runs(text, COPIED_WORDS):
        return f"copied the chunk: {question[:80]!r}"
    echoed = (_runs(words, ECHO_WORDS) & _EXAMPLE_RUNS) - _runs(text, ECHO_WORDS)
    if echoed:
        return f"echoed a worked example ({' '.join(min(echoed))!r}): {question[:80]!r}"
    pointer = POINTING.search(question)
    if pointer:
        return f"points at {pointer.group(0)!r}, which a question on its own has nothing to refer to: {question[:80]!r}"
    where = f"{chunk}\n{page}".lower()
    invented = [name for name in _named(question) if name.lower() not in where]
    if invented:
        return f"names {invented[0]!r}, which its chunk does not mention: {question[:80]!r}"
    if passage is not None and not _stems(question) & _stems(f"{page} {passage.name or ''} {passage.sentence}"
                                                             .replace("_", " ").replace(".", " ")):
        return f"shares no word with its passage: {question[:80]!r}"
    return ""
