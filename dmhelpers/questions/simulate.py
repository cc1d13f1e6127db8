"""The offline question simulator: questions about a chunk with no model and no key.

Known-item query simulation (Azzopardi, de Rijke & Balog, "Building simulated queries for known-item topics",
SIGIR 2007): query terms are drawn from a mixture of the chunk's own language model, weighted towards
discriminative terms (tf x idf over the whole collection), and collection noise (probability ``1 - LAMBDA``). The
chunk's most salient sentence (highest summed tf-idf) gives the question its shape: it is compressed, lightly
paraphrased from a small synonym table and poured into one of several templates ("How do I ...?", "What does X do
...?", "Which function ...?"). No question is a substring of its chunk, and none copies more than five consecutive
words of it.

Be honest about what these are: simulated questions reward lexical and semantic overlap with the chunk, so they are
easier than, and different from, what people ask; their grammar is often clumsy. They are good enough to train and
compare retrieval offline and reproducibly. An LLM writes more natural, paraphrased questions (:mod:`.llm`).
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Sequence

LAMBDA = 0.8  # weight of the chunk's own language model in the query-term mixture; the rest is collection noise
MIN_PROSE_WORDS = 20  # chunks with fewer prose words (grammar rules, constant tables) are not asked about
MAX_COPIED_WORDS = 5  # no offline question repeats a longer run of its chunk's words
SUBJECT_RATE = 0.6  # share of offline questions that may name an identifier (these are the easy ones)

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


def usable(text: str) -> bool:
    """A chunk is worth a question if it has enough prose to ask about."""
    return len(PROSE_RE.findall(text)) >= MIN_PROSE_WORDS


def normalise_question(question: str) -> str:
    """The duplicate key: case- and whitespace-insensitive."""
    return " ".join(question.lower().split())


class Collection:
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


def _query_terms(weights: dict[str, float], collection: Collection, rng: random.Random, k: int,
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


def offline_question(text: str, collection: Collection, seed: int | str) -> str | None:
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

