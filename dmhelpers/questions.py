"""Training questions for Deep Memory: one question per sampled chunk, labelled with that chunk.

``generate_questions(texts, ids, n)`` returns the tutorial's ``(questions, relevance)`` pair, where
``relevance[i] == [(chunk_id, 1.0)]`` names the chunk question ``i`` was written about.

Two writers share the same seeded chunk sampling, de-duplication and output format:

* ``llm="offline"`` (the default) needs no model and no key. It *simulates* questions with known-item query
  simulation (Azzopardi, de Rijke & Balog, "Building simulated queries for known-item topics", SIGIR 2007):
  query terms are drawn from a mixture of the chunk's own language model, weighted towards discriminative
  terms (tf x idf over the whole collection), and collection noise (probability ``1 - LAMBDA``). The chunk's
  most salient sentence (highest summed tf-idf) gives the question its shape: it is compressed, lightly
  paraphrased from a small synonym table and poured into one of several templates ("How do I ...?",
  "What does X do ...?", "Which function ...?"). No question is a substring of its chunk, and none copies more
  than five consecutive words of it.

  Be honest about what these are: simulated questions reward lexical and semantic overlap with the chunk, so
  they are easier than, and different from, what people ask; their grammar is often clumsy. They are good
  enough to train and compare retrieval offline and reproducibly. An LLM writes more natural, paraphrased
  questions.
* ``llm="<chat model>"`` (e.g. ``"gpt-4o-mini"``) asks OpenAI or any OpenAI-compatible server
  (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) for one question per chunk, with structured JSON output. Every
  question is appended to a JSON-lines ``cache`` as soon as it arrives, so a crash or a rate limit never loses
  questions already paid for and a rerun resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from dmhelpers.errors import DeepMemoryError, InputError, redact, require_api_key

OFFLINE = "offline"
LAMBDA = 0.8  # weight of the chunk's own language model in the query-term mixture; the rest is collection noise
MIN_PROSE_WORDS = 20  # chunks with fewer prose words (grammar rules, constant tables) are not asked about
MAX_COPIED_WORDS = 5  # no offline question repeats a longer run of its chunk's words
SUBJECT_RATE = 0.6  # share of offline questions that may name an identifier (these are the easy ones)
CONTENT_RETRIES = 2  # extra LLM attempts per chunk after invalid JSON, an empty question or a refusal

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either else etc for from further had has have having he
her here hers him his how however i if in into is it its itself just may me might more most must my no nor not
now of off on once only or other our out over own same see she should so some such than that the their them then
there these they this those through thus to too under until up upon us very via was we were what when where
whether which while who whom why will with within without would yet you your
e g ie eg self cls args kwargs none true false new version defined object objects builtins
""".split())

# Light paraphrases: each is used with probability 1/2 per occurrence, and always when breaking a copied run.
SYNONYMS = {
    "returns": "gives back", "return": "give back", "returned": "given back", "file": "file on disk",
    "files": "files on disk", "directory": "folder", "directories": "folders", "argument": "parameter",
    "arguments": "parameters", "specified": "given", "specify": "give", "string": "text string",
    "strings": "text strings", "integer": "whole number", "integers": "whole numbers", "raise": "throw",
    "raises": "throws", "raised": "thrown", "error": "failure", "create": "make", "creates": "makes",
    "created": "made", "contains": "holds", "contain": "hold", "used": "employed", "use": "employ",
    "attribute": "field", "attributes": "fields", "empty": "blank", "remove": "delete", "removes": "deletes",
    "removed": "deleted", "current": "present", "multiple": "several", "optional": "not required",
    "called": "invoked", "call": "invoke", "calls": "invokes", "represents": "stands for",
    "represent": "stand for", "automatically": "on its own", "determine": "work out", "provide": "supply",
    "provides": "supplies", "provided": "supplied", "allows": "lets", "allow": "let", "ignored": "skipped",
    "ignore": "skip", "large": "big", "previous": "earlier", "begin": "start", "beginning": "start",
    "instance": "object", "method": "member function", "methods": "member functions", "value": "result",
    "values": "results", "character": "char", "characters": "chars", "necessary": "needed",
    "required": "needed", "subsequent": "later", "obtain": "get", "receive": "get", "modify": "change",
    "modified": "changed", "retrieve": "fetch", "initial": "starting", "maximum": "largest",
    "minimum": "smallest", "number": "count", "sequence": "series", "terminate": "end", "invoke": "call",
}

# Imperative docstring verbs ("Return the ...", "Create a ...") and how a user would say them.
VERBS = {
    "return": ["get", "obtain", "fetch"], "create": ["make", "build"], "convert": ["turn", "transform"],
    "make": ["build", "produce"], "read": ["load", "read in"], "write": ["save", "write out"],
    "set": ["change", "configure"], "get": ["obtain", "fetch"], "remove": ["delete", "drop"],
    "add": ["insert", "put in"], "raise": ["throw", "signal"], "compute": ["calculate", "work out"],
    "calculate": ["compute", "work out"], "check": ["test", "verify"], "test": ["check", "verify"],
    "find": ["look up", "locate"], "parse": ["interpret", "break down"], "encode": ["serialize", "pack"],
    "decode": ["deserialize", "unpack"], "log": ["record", "emit"], "update": ["refresh", "change"],
    "round": ["round off"], "close": ["shut"], "start": ["begin", "launch"], "stop": ["halt", "end"],
    "wait": ["block", "pause"], "copy": ["duplicate", "clone"], "delete": ["remove", "erase"],
    "split": ["break up", "divide"], "join": ["combine", "merge"], "format": ["lay out", "render"],
    "print": ["display", "show"], "call": ["invoke", "run"], "initialize": ["set up", "prepare"],
    "construct": ["build", "make"], "load": ["read", "import"], "dump": ["write out", "serialize"],
    "send": ["transmit", "push"], "compare": ["check", "match"], "sort": ["order", "arrange"],
    "search": ["look for", "scan"], "replace": ["substitute", "swap"], "insert": ["put", "place"],
    "append": ["add", "attach"], "extract": ["pull out", "take out"], "generate": ["produce", "emit"],
    "execute": ["run", "carry out"], "run": ["execute", "launch"], "handle": ["deal with", "process"],
    "acquire": ["take", "obtain"], "release": ["free", "give up"], "evaluate": ["compute", "work out"],
    "reset": ["restore", "clear"], "change": ["alter", "modify"], "register": ["record", "enlist"],
    "open": ["access", "open up"], "apply": ["use", "employ"], "build": ["construct", "make"],
    "translate": ["map", "transform"], "match": ["compare", "test"], "count": ["tally", "number"],
    "flush": ["push out", "empty"], "iterate": ["loop", "walk"], "yield": ["produce", "generate"],
    "define": ["declare", "set up"], "emit": ["output", "send out"], "escape": ["quote", "protect"],
    "truncate": ["shorten", "cut"], "wrap": ["enclose", "fold"], "store": ["keep", "save"],
    "move": ["shift", "relocate"], "rename": ["retitle", "move"], "resize": ["scale", "grow"],
    "serialize": ["encode", "dump"], "deserialize": ["decode", "load"], "push": ["put", "add"],
    "pop": ["take", "remove"], "map": ["translate", "turn"], "compile": ["prepare", "build"],
    "do": ["perform", "carry out"],
}

# Question templates. {about}: topic words; {subject}: an identifier; {phrase}: "verb + object" from an instruction.
TOPIC_FORMS = ("Which function deals with {about}", "How do I work with {about}", "What should I know about {about}",
               "How are {about} handled", "What is the role of {about}")
SUBJECT_FORMS = ("What does {subject} do with {about}", "What is the purpose of {subject} for {about}",
                 "How does {subject} handle {about}", "Why would I use {subject} for {about}")
TASK_FORMS = ("How do I {phrase}", "How can I {phrase}", "Which function {does} {rest}", "What is the way to {phrase}",
              "Is there a way to {phrase} in Python")
SUBJECT_TASK_FORMS = ("Why would I use {subject} to {phrase}", "Can {subject} {phrase}")

WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_']*")
PROSE_RE = re.compile(r"\b[A-Za-z][a-z]+\b")  # plain words: not identifiers with underscores, digits or camelCase
IDENT_RE = re.compile(
    r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b(?!\.?\w)"  # dotted names: ZipFile.read, json.loads
    r"|\b[A-Za-z_]\w*(?=\()"  # called names: read(, getLoggerClass(
    r"|\b[A-Z][a-z0-9]+[A-Z]\w*\b"  # CamelCase: ZipFile, LogRecord
    r"|\b[a-z][a-z0-9]*_[a-z0-9_]*[a-z0-9]\b"  # snake_case: chunk_size
)
# Lines that end a paragraph: rulers, headings, table rows and pydoc signatures ("read(self, name) method of ...").
BREAK_RE = re.compile(r"^\s*(?:[-=*_ ]{3,}|#+ .*|class\s.*|[\w.]+\(.*\)\s*(?:->.*|method of .*|from .*)?"
                      r"|[\w.]+ = .*|\|.*|\+[-=+]*)\s*$")


class QuestionGenerationError(DeepMemoryError, RuntimeError):
    """The question-writing model could not be reached or configured."""


def _terms(text: str) -> list[str]:
    """Lower-cased content words of ``text`` (identifiers stay whole, stopwords and 1-letter words go)."""
    words = (w.strip("_'").lower() for w in WORD_RE.findall(text))
    return [w for w in words if len(w) > 1 and w not in STOPWORDS and sum(c.isdigit() for c in w) < 3]


# Words every question of a form shares: they do not count as overlap with the chunk.
TEMPLATE_WORDS = frozenset(_terms(re.sub(r"\{\w+\}", " ", " ".join(
    TOPIC_FORMS + SUBJECT_FORMS + TASK_FORMS + SUBJECT_TASK_FORMS))))


def _words(text: str) -> list[str]:
    """Lower-cased words of ``text`` in order, for measuring copied runs ("json.loads" is two words)."""
    return re.findall(r"[a-z0-9_]+", text.lower())


def _copies(question: str, chunk_grams: set[tuple[str, ...]]) -> bool:
    """Whether ``question`` repeats more than MAX_COPIED_WORDS consecutive words of its chunk."""
    words, span = _words(question), MAX_COPIED_WORDS + 1
    return any(tuple(words[i:i + span]) in chunk_grams for i in range(len(words) - span + 1))


def _usable(text: str) -> bool:
    """A chunk is worth a question if it has enough prose to ask about."""
    return len(PROSE_RE.findall(text)) >= MIN_PROSE_WORDS


def _norm(question: str) -> str:
    """The duplicate key: case- and whitespace-insensitive."""
    return " ".join(question.lower().split())


class _Collection:
    """Document frequencies and the collection language model of ``texts`` (the simulator's background)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.df: Counter[str] = Counter()
        self.cf: Counter[str] = Counter()
        for text in texts:
            terms = _terms(text)
            self.cf.update(terms)
            self.df.update(set(terms))
        self.n_docs = len(texts)
        self.vocab = list(self.cf)
        self.vocab_weights = [self.cf[t] for t in self.vocab]

    def idf(self, term: str) -> float:
        return math.log((1 + self.n_docs) / (1 + self.df.get(term, 0))) + 1.0

    def tfidf(self, text: str) -> dict[str, float]:
        return {t: c * self.idf(t) for t, c in Counter(_terms(text)).items()}

    def noise_term(self, rng: random.Random) -> str:
        return rng.choices(self.vocab, self.vocab_weights)[0]


def _sentences(text: str) -> list[tuple[str, str | None]]:
    """Prose sentences of a chunk, each with the signature or identifier that heads its paragraph (or None).

    Signature lines (``read(self, name)``), rulers and table rows end a paragraph instead of joining it.
    """
    out: list[tuple[str, str | None]] = []
    block: list[str] = []
    head: str | None = None

    def flush() -> None:
        joined = " ".join(" ".join(block).split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"*(])", joined):
            if len(PROSE_RE.findall(sentence)) >= 4:
                out.append((sentence, head))
        block.clear()

    for line in text.splitlines():
        if not line.strip() or BREAK_RE.match(line):
            flush()
            name = re.match(r"\s*(?:class\s+)?([A-Za-z_][\w.]*)(?:\(| = )", line)
            if name:
                head = name.group(1)
            continue
        block.append(line)
    flush()
    return out


def _paraphrase(words: list[str], rng: random.Random, p: float = 0.5) -> list[str]:
    """Swap some words for synonyms (``SYNONYMS``), each with probability ``p``."""
    out = []
    for w in words:
        swap = SYNONYMS.get(w.lower())
        out.extend((swap if swap and rng.random() < p else w).split())
    return out


def _compress(sentence: str, rng: random.Random, limit: int) -> list[str]:
    """The first clause of ``sentence`` as plain words, without articles, at most ``limit`` words, paraphrased."""
    clause = re.split(r"[,;:()\[\]]| - | -- ", sentence)[0]
    words = [w for w in re.findall(r"[A-Za-z0-9_.']+", clause) if w.lower() not in {"a", "an", "the"}]
    words = [w.strip(".'") for w in words if w.strip(".'")][:limit]
    return _paraphrase(words, rng)


def _third_person(verb: str) -> str:
    """``get`` -> ``gets``, ``look up`` -> ``looks up``: for "Which function ...?" questions."""
    head, _, rest = verb.partition(" ")
    if head.endswith(("s", "sh", "ch", "x")):
        head += "es"
    elif head.endswith("y") and head[-2:-1] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return f"{head} {rest}".strip()


def _imperative(sentence: str) -> str | None:
    """The base verb if ``sentence`` is a docstring instruction ("Return ...", "Creates ..."), else None."""
    words = [w.strip("*\"'").lower() for w in sentence.split()[:2]] + [""]
    if not sentence.lstrip("*\"'")[:1].isupper():
        return None
    first, second = words[0], words[1]
    if first in VERBS:
        return first
    # "Returns the ..." is a verb, "Changes to ..." a plural noun; "Returned" (past tense) never counts.
    if second in {"to", "of", "are", "is", "were", "was", "in", "and", "for", "on", "with", "from", "by", "that"}:
        return None
    return next((base for base in (first[:-1], first[:-2]) if base in VERBS and first in (base + "s", base + "es")),
                None)


def _split_subject(sentence: str) -> tuple[str, str] | None:
    """``("json.loads", "Deserializes s ...")`` for "json.loads(s) deserializes s ...", else None."""
    m = re.match(r"([A-Za-z_][\w.]*)(\([^)]*\))?\s+([a-z]+)\s+(.*)", sentence)
    if not m or not (m.group(2) or "." in m.group(1) or "_" in m.group(1)):
        return None  # the first word is not an identifier
    rest = f"{m.group(3).capitalize()} {m.group(4)}"
    return (m.group(1), rest) if m.group(3).endswith("s") and _imperative(rest) else None


def _query_terms(weights: dict[str, float], collection: _Collection, rng: random.Random, k: int,
                 salient: Sequence[str] = ()) -> list[str]:
    """``k`` known-item query terms: each w.p. LAMBDA from the chunk, else collection noise.

    A chunk draw takes the salient sentence's next keyword if one is left, otherwise a term sampled from the
    chunk's tf-idf model, so discriminative words are likely but never certain.
    """
    own = [t for t in weights if len(t) > 2]
    salient = list(salient)
    picked: list[str] = []
    for _ in range(4 * k):
        if len(picked) == k:
            break
        if own and rng.random() < LAMBDA:
            term = salient.pop(0) if salient else rng.choices(own, [weights[t] for t in own])[0]
        else:
            term = collection.noise_term(rng)
        if len(term) > 2 and term.lower() not in {p.lower() for p in picked}:
            picked.append(term)
    return picked


def _pick_subject(text: str, head: str | None, weights: dict[str, float], rng: random.Random) -> str | None:
    """An identifier to ask about: the salient sentence's heading signature, or a discriminative name in the chunk."""
    def good(name: str) -> bool:
        return (len(name) > 2 and name.lower() not in STOPWORDS and not name.startswith(("__", "builtins."))
                and min(len(part) for part in name.split(".")) > 1)  # not "e.g" or "i.e"

    if head and good(head) and rng.random() < 0.5:
        return head
    names = list(dict.fromkeys(n.strip(".") for n in IDENT_RE.findall(text) if good(n.strip("."))))
    if not names:
        return None
    score = {n: sum(weights.get(t, 0.0) for t in _terms(n.replace(".", " "))) for n in names}
    return rng.choice(sorted(names, key=lambda n: -score[n])[:3])


def _keywords(sentence: str, weights: dict[str, float], surface: dict[str, str], k: int) -> list[str]:
    """The ``k`` most discriminative words of ``sentence``, in the order they appear, as the chunk spells them."""
    terms = list(dict.fromkeys(_terms(sentence)))
    top = set(sorted(terms, key=lambda t: -weights.get(t, 0.0))[:k])
    return [surface.get(t, t) for t in terms if t in top]


def _break_copies(question: str, chunk_words: set[tuple[str, ...]], rng: random.Random) -> str:
    """Rewrite ``question`` until no run of more than MAX_COPIED_WORDS words also occurs in the chunk."""
    words = question.split()
    span = MAX_COPIED_WORDS + 1
    for _ in range(12):
        low = [re.sub(r"[^a-z0-9_]", "", w.lower()) for w in words]
        hit = next((i for i in range(len(low) - span + 1) if tuple(low[i:i + span]) in chunk_words), None)
        if hit is None:
            break
        window = range(hit, hit + span)
        # Prefer dropping a stopword, then a synonym, then dropping the middle word of the run.
        stop = [i for i in window if low[i] in STOPWORDS and i > 0]
        syn = [i for i in window if low[i] in SYNONYMS]
        if stop:
            del words[rng.choice(stop)]
        elif syn:
            i = rng.choice(syn)
            words[i:i + 1] = SYNONYMS[low[i]].split()
        else:
            del words[hit + span // 2]
    return " ".join(words)


def _tidy(question: str) -> str:
    """One space between words, a capital first letter, exactly one question mark, at most 25 words."""
    words = question.replace("?", " ").split()[:24]
    while words and words[-1].lower() in STOPWORDS | {"with", "in", "for"}:
        words.pop()
    text = " ".join(words).strip(" ,;:.")
    return (text[:1].upper() + text[1:] + "?") if text else ""


def _compose(sentence: str | None, verb: str | None, subject: str | None, topic: list[str],
             rng: random.Random) -> str:
    """Pour the compressed sentence, subject and topic words into one of several question templates."""
    fill = {"about": " ".join(_paraphrase(topic, rng)), "subject": subject}
    if sentence and verb:  # a docstring instruction: ask how to do it, in the user's words
        rest = _compress(" ".join(sentence.split()[1:]), rng, limit=rng.randint(4, 8))
        if verb == "return" and rest[:2] and rest[0].lower() in {"true", "false"} and rest[1] == "if":
            said, rest = rng.choice(["check whether", "test if", "find out whether"]), rest[2:]
        else:
            said = rng.choice(VERBS[verb])
        fill.update(phrase=" ".join([said, *rest]), does=_third_person(said), rest=" ".join(rest))
        forms = TASK_FORMS + (SUBJECT_TASK_FORMS if subject else ())
    else:
        forms = TOPIC_FORMS + (SUBJECT_FORMS if subject else ())
    return _tidy(rng.choice(forms).format(**fill))


def _offline_question(text: str, collection: _Collection, seed: int | str) -> str | None:
    """A simulated question about ``text`` (deterministic for the text and seed), or None if none passes checks."""
    rng = random.Random(f"{seed}:{hashlib.sha256(text.encode()).hexdigest()}")
    weights = collection.tfidf(text)
    # How the chunk spells a term: identifiers keep their case, capitalised plain words are lowered.
    surface = {w.strip("_'").lower(): w.strip("_'") for w in WORD_RE.findall(text) if not PROSE_RE.fullmatch(w)}
    sentences = [s for s in _sentences(text) if len(s[0].split()) <= 80]
    sentence, head = max(sentences, key=lambda s: sum(weights.get(t, 0.0) for t in _terms(s[0])),
                         default=(None, None))
    split = _split_subject(sentence) if sentence else None
    if split:  # "json.loads(s) deserializes ..." asks like "Deserialize ...", about json.loads
        head, sentence = split
    verb = _imperative(sentence) if sentence else None
    words = _words(text)
    grams = {tuple(words[i:i + MAX_COPIED_WORDS + 1]) for i in range(len(words) - MAX_COPIED_WORDS)}
    lowered = " ".join(text.lower().split())
    for _ in range(6):
        # Naming an identifier makes a question easy to match, so only some questions do.
        subject = _pick_subject(text, head, weights, rng) if rng.random() < SUBJECT_RATE else None
        # Topic: salient-sentence keywords plus known-item query terms (chunk model mixed with collection noise).
        salient = _keywords(sentence, weights, surface, 2) if sentence else []
        topic = _query_terms(weights, collection, rng, rng.randint(2, 3), salient)
        taken = set(_terms(subject or ""))  # do not ask "What does random do with random?"
        topic = [w for w in topic if w.lower() not in taken and not taken.add(w.lower())]
        if not topic:
            continue
        question = _tidy(_break_copies(_compose(sentence, verb, subject, topic, rng), grams, rng))
        if 4 <= len(question.split()) <= 25 and question[:-1].lower().strip() not in lowered \
                and not _copies(question, grams) and (set(_terms(question)) - TEMPLATE_WORDS) & set(weights):
            return question
    return None


# --- LLM path --------------------------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write questions for a search benchmark over software documentation. Given one chunk of the documentation, "
    "write ONE question that a user of the documentation would ask and that this chunk answers. Ask it the way a "
    "user would, in your own words: do not copy the chunk's wording. Reply with JSON only: {\"question\": \"...\"}."
)
USER_PROMPT = "Write one question this chunk answers, as JSON {\"question\": \"...\"}."
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "question", "strict": True, "schema": {
    "type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"],
    "additionalProperties": False}}}
JSON_OBJECT = {"type": "json_object"}  # for servers without structured outputs


def _text_sha(text: str) -> str:
    """Identifies a chunk's text in the cache, so an edited chunk is asked about again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _parse_reply(content: str | None) -> tuple[str | None, str]:
    """The question in a model's JSON reply, or None and why not."""
    raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", (content or "").strip())  # some local models fence their JSON
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None, f"invalid JSON: {raw[:80]!r}"
    if not isinstance(data, dict) or not isinstance(data.get("question"), str):
        return None, f"no \"question\" string in the reply: {raw[:80]!r}"
    question = " ".join(data["question"].split())
    return (question, "") if question else (None, "empty question")


class _Cache:
    """An append-only JSON-lines file of questions already written, so a rerun never pays for them twice."""

    def __init__(self, path: str | Path, model: str) -> None:
        self.path, self.model = Path(path), model
        self.known: dict[tuple[str, str], str] = {}
        self._file = None
        if self.path.is_dir():
            raise InputError(f"cache={str(path)!r} is a folder; it must be a file path. Pass e.g. "
                             f"{str(self.path / 'llm-cache.jsonl')!r}.")
        if self.path.exists():
            for line in self.path.read_text("utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(entry, dict) and entry.get("model") == model and isinstance(entry.get("question"), str):
                    self.known[(entry.get("chunk_id"), entry.get("text_sha"), entry.get("nth", 0))] = entry["question"]

    def get(self, chunk_id: str, text: str, nth: int = 0) -> str | None:
        return self.known.get((chunk_id, _text_sha(text), nth))

    def add(self, chunk_id: str, text: str, question: str, nth: int = 0) -> None:
        """Append one question and make it durable before the next request."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()
            if self._file.tell():
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        self._file.write(b"\n")  # end a torn last line so the new entry starts on its own
        entry = {"model": self.model, "chunk_id": chunk_id, "text_sha": _text_sha(text), "nth": nth, "question": question}
        self._file.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.known[(chunk_id, _text_sha(text), nth)] = question

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _BadReply(Exception):
    """A reply that is not a chat completion at all; counted like an unusable answer and asked again."""


class _ChatWriter:
    """Asks a chat model for one question per chunk, falling back from json_schema to json_object once."""

    def __init__(self, model: str, max_retries: int, timeout: float, cache: str | Path | None) -> None:
        require_api_key(f"LLM = {model!r}", "use LLM = 'offline' to simulate questions without a model",
                        QuestionGenerationError)
        import openai

        self.openai, self.model = openai, model
        self.client = openai.OpenAI(max_retries=max_retries, timeout=timeout)
        self.response_format: dict = JSON_SCHEMA
        self.answered = False  # a 400 before any answer means the server does not do json_schema
        self.resume = f" Questions written so far are kept in {str(cache)!r}; rerun to resume." if cache else ""

    def ask(self, text: str, avoid: Sequence[str] = ()) -> tuple[str | None, str]:
        """A question about ``text`` (unlike those in ``avoid``), or None and the reason after 1 + CONTENT_RETRIES
        unusable replies."""
        reason = ""
        for _ in range(1 + CONTENT_RETRIES):
            try:
                message = self._complete(text, avoid)
            except _BadReply as exc:
                reason = str(exc)
                continue
            if message is None:
                reason = "the reply had no choices"
            elif getattr(message, "refusal", None):
                reason = f"refused: {message.refusal}"
            else:
                question, reason = _parse_reply(message.content)
                if question:
                    return question, ""
        return None, reason

    def _complete(self, text: str, avoid: Sequence[str] = ()):
        """The model's reply message for ``text`` (None if it had no choices); fatal server errors raise."""
        others = "".join(f"\n- {q}" for q in avoid)
        ask = f"{USER_PROMPT} Ask something different from these questions:{others}" if avoid else USER_PROMPT
        user = f"Documentation chunk:\n<<<\n{text}\n>>>\n\n{ask}"
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        for _ in range(2):  # a second pass only right after falling back to json_object
            try:
                response = self.client.chat.completions.create(model=self.model, messages=messages,
                                                               response_format=self.response_format)
            except self.openai.BadRequestError as exc:
                mentions = any(word in str(exc).lower() for word in ("response_format", "json_schema"))
                if self.response_format is JSON_SCHEMA and (mentions or not self.answered):
                    self.response_format = JSON_OBJECT  # for the rest of the run
                    continue
                raise QuestionGenerationError(
                    f"The server rejected a request for model {self.model!r}: {redact(str(exc))}. Check LLM (the "
                    f"model name) and OPENAI_BASE_URL.{self.resume}") from exc
            except self.openai.APIError as exc:  # what is left after the client's own retries
                raise QuestionGenerationError(
                    f"The chat server failed for model {self.model!r}: {redact(str(exc)).rstrip('.')}. Check "
                    f"OPENAI_API_KEY, OPENAI_BASE_URL and the model name, or wait out a rate limit.{self.resume}"
                ) from exc
            except ValueError as exc:  # a reply whose body is not JSON (json.JSONDecodeError): asked again
                raise _BadReply(f"the server's reply was not JSON ({exc})") from exc
            choices = getattr(response, "choices", None)
            if not isinstance(choices, list):  # e.g. an HTML page from a proxy, which the client returns as a str
                raise _BadReply(f"the server's reply was not a chat completion: {str(response)[:80]!r}")
            self.answered = True
            return choices[0].message if choices else None
        raise QuestionGenerationError(f"The server rejected json_schema and json_object output for model "
                                      f"{self.model!r}. Use a model that can reply in JSON, or LLM = 'offline'.")


# --- The public function ---------------------------------------------------------------------------------------

def _check_inputs(texts: Sequence[str], ids: Sequence[str], n: int, llm: str) -> tuple[list[str], list[str]]:
    """Validate the arguments, naming the problem and the fix."""
    if not isinstance(llm, str) or not llm.strip():
        raise InputError(f"llm must be 'offline' or a chat model name such as 'gpt-4o-mini', got {llm!r}. "
                         "Use LLM = 'offline' to simulate questions without a model.")
    if isinstance(texts, str) or isinstance(ids, str) or texts is None or ids is None:
        raise InputError(f"texts and ids must be lists (one entry per chunk), got {type(texts).__name__} and "
                         f"{type(ids).__name__}. Pass the store's db.texts and db.ids.")
    texts, ids = list(texts), list(ids)
    if len(texts) != len(ids):
        raise InputError(f"texts and ids must have the same length, got {len(texts)} texts and {len(ids)} ids. "
                         "Pass db.texts and db.ids of the same store.")
    if not texts:
        raise InputError("texts is empty: there are no chunks to write questions about. Build the store first "
                         "(notebook 01) and pass its db.texts and db.ids.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a whole number of questions of at least 1, got {n!r}. "
                         "Use e.g. N_QUESTIONS = 200.")
    bad = next((i for i, (t, c) in enumerate(zip(texts, ids)) if not isinstance(t, str) or not isinstance(c, str)),
               None)
    if bad is not None:
        raise InputError(f"texts and ids must be strings; entry {bad} is ({type(texts[bad]).__name__}, "
                         f"{type(ids[bad]).__name__}). Pass the store's db.texts and db.ids.")
    counts = Counter(ids)
    dup = next((c for c, k in counts.items() if k > 1), None)
    if dup is not None:
        raise InputError(f"ids must be unique, but {dup!r} appears {counts[dup]} times, so a question could not "
                         "name its chunk. Pass the store's db.ids, which are unique.")
    return texts, ids


def _collect(order: list[int], n: int, per_chunk: int, ids: list[str],
             write: Callable[[int, int, list[str]], str | None],
             on_question: Callable[[], object]) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Walk the sampled chunks, keeping up to ``per_chunk`` new (non-duplicate) questions each, until there are ``n``."""
    questions: list[str] = []
    relevance: list[list[tuple[str, float]]] = []
    seen: set[str] = set()
    for i in order:
        mine: list[str] = []
        for nth in range(per_chunk):
            if len(questions) == n:
                return questions, relevance
            question = write(i, nth, mine)
            if question is None or _norm(question) in seen:
                continue
            seen.add(_norm(question))
            mine.append(question)
            questions.append(question)
            relevance.append([(ids[i], 1.0)])
            on_question()
    return questions, relevance


def generate_questions(texts: Sequence[str], ids: Sequence[str], n: int, llm: str = "offline", seed: int = 0,
                       per_chunk: int = 1, cache: str | Path | None = None, max_retries: int = 6,
                       timeout: float = 60.0, progress: bool = True) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Write ``n`` questions, each about one chunk, as Deep Memory training data.

    Chunks are sampled with ``random.Random(seed)`` among those with at least ``MIN_PROSE_WORDS`` words of prose;
    duplicate questions (ignoring case and spacing) are dropped and further sampled chunks used instead. If the
    chunks run out first, the questions found are returned with a warning.

    Args:
        texts, ids: the chunks and their ids, e.g. ``db.texts`` and ``db.ids`` of a :class:`~dmhelpers.VectorStore`.
        n: how many questions.
        llm: ``"offline"`` (simulated questions, no model, no key) or a chat model name for OpenAI or an
            OpenAI-compatible server (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
        seed: chooses the chunks (and the offline wording); the same seed gives the same questions.
        per_chunk: questions about each sampled chunk (real users ask about some chunks again and again; the
            tutorial writes one).
        cache: JSON-lines file of LLM questions, appended as they arrive and reused on a rerun (LLM path only).
        max_retries, timeout: the ``openai`` client's retries (rate limits, 5xx, timeouts) and seconds per request.
        progress: show a progress bar (LLM path only; the offline path takes well under a second).

    Returns:
        ``(questions, relevance)`` with ``relevance[i] == [(id_of_the_chunk, 1.0)]``, in sample order.
    """
    texts, ids = _check_inputs(texts, ids, n, llm)
    if isinstance(per_chunk, bool) or not isinstance(per_chunk, int) or per_chunk < 1:
        raise InputError(f"per_chunk must be a whole number of at least 1, got {per_chunk!r}. "
                         "Use e.g. QUESTIONS_PER_CHUNK = 1.")
    usable = [i for i, text in enumerate(texts) if _usable(text)]
    if n > len(usable) * per_chunk:
        raise InputError(f"n = {n} questions asked for, but only {len(usable)} of {len(texts)} chunks have enough "
                         f"prose (at least {MIN_PROSE_WORDS} words) to ask about. Use a smaller N_QUESTIONS "
                         f"(at most {len(usable) * per_chunk}).")
    order = random.Random(seed).sample(usable, len(usable))

    if llm.strip().lower() == OFFLINE:
        collection = _Collection(texts)
        questions, relevance = _collect(
            order, n, per_chunk, ids,
            lambda i, nth, _: _offline_question(texts[i], collection, seed if nth == 0 else f"{seed}.{nth}"),
            lambda: None)
    else:
        writer = _ChatWriter(llm, max_retries, timeout, cache)
        store = _Cache(cache, llm) if cache is not None else None
        failures: list[tuple[str, str]] = []

        def write(i: int, nth: int, earlier: list[str]) -> str | None:
            cached = store.get(ids[i], texts[i], nth) if store else None
            if cached is not None:
                return cached
            question, reason = writer.ask(texts[i], earlier)
            if question is None:
                failures.append((ids[i], reason))
            elif store:
                store.add(ids[i], texts[i], question, nth)
            return question

        bar = tqdm(total=n, desc=f"Questions ({llm})", disable=not progress)
        try:
            questions, relevance = _collect(order, n, per_chunk, ids, write, bar.update)
        finally:  # also when the server fails for good: close the cache and report what was skipped
            bar.close()
            if store:
                store.close()
            if failures:
                tqdm.write(f"Skipped {len(failures)} chunk(s) the model gave no usable question for:")
                for chunk_id, reason in failures:
                    tqdm.write(f"  {chunk_id}: {reason}")

    if len(questions) < n:
        warnings.warn(f"Only {len(questions)} of {n} questions: the {len(usable)} usable chunks ran out (duplicate "
                      "or failed questions are skipped). Use a smaller N_QUESTIONS or a larger corpus.", stacklevel=2)
    return questions, relevance


# --- Splitting and saving ---------------------------------------------------------------------------------------

Relevance = list[list[tuple[str, float]]]


def split_questions(questions: Sequence[str], relevance: Relevance, train_fraction: float = 0.5, seed: int = 0
                    ) -> tuple[tuple[list[str], Relevance], tuple[list[str], Relevance]]:
    """A seeded random split by question into ``(train_questions, train_relevance), (test_questions, test_relevance)``."""
    if len(questions) != len(relevance):
        raise InputError(f"Got {len(questions)} questions but {len(relevance)} relevance lists; pass one per question.")
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float)) or not 0 < train_fraction < 1:
        raise InputError(f"train_fraction must be between 0 and 1 (exclusive), got {train_fraction}. "
                         "Use e.g. TRAIN_FRACTION = 0.5.")
    order = random.Random(seed).sample(range(len(questions)), len(questions))
    cut = round(train_fraction * len(order))
    if cut < 1 or cut == len(order):
        raise InputError(f"{len(questions)} questions are too few to split with train_fraction={train_fraction}: "
                         "one side would be empty. Write more questions (N_QUESTIONS).")
    pick = lambda idx: ([questions[i] for i in idx], [list(map(tuple, relevance[i])) for i in idx])  # noqa: E731
    return pick(sorted(order[:cut])), pick(sorted(order[cut:]))


def save_questions(path: str | Path, questions: Sequence[str], relevance: Relevance) -> None:
    """Write questions and their relevance as JSON lines ``{"question", "relevance": [[id, score], ...]}``, atomically."""
    from dmhelpers.files import atomic_write_text

    if len(questions) != len(relevance):
        raise InputError(f"Got {len(questions)} questions but {len(relevance)} relevance lists; pass one per question.")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": q, "relevance": [list(p) for p in rel]}, ensure_ascii=False)
             for q, rel in zip(questions, relevance)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def load_questions(path: str | Path) -> tuple[list[str], Relevance]:
    """Read questions saved by :func:`save_questions` (notebook 02 saves ``train.jsonl`` and ``test.jsonl``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"No questions at {path}. Run notebook 02 first (it saves train.jsonl and test.jsonl "
                         "under the store folder), or check STORE_PATH.")
    questions, relevance = [], []
    for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        try:
            entry = json.loads(line)
            questions.append(str(entry["question"]))
            relevance.append([(str(cid), float(score)) for cid, score in entry["relevance"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} line {n} is not a saved question ({exc}). Rerun notebook 02 to rewrite it.") from exc
    return questions, relevance


def check_question_lists(questions: Sequence[str], relevance: Sequence, caller: str) -> None:
    """Refuse anything but a list of questions with one relevance list each (what :func:`load_questions` returns)."""
    if isinstance(questions, str) or not questions or len(questions) != len(relevance):
        raise InputError(f"{caller} needs a list of questions and one relevance list per question "
                         "(as load_questions returns them).")
