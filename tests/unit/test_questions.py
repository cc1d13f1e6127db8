from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import chat_completion, chunk_asked_about, send_reply

from dmhelpers import DeepMemoryError, InputError, QuestionGenerationError, generate_questions
from dmhelpers.questions.cache import SHIPPED
from dmhelpers.questions.passages import Passage, passages, plan
from dmhelpers.questions.prompt import EXAMPLES, PROMPT_SHA, parse_reply, rejected
from dmhelpers.questions.variety import sibling_summary, siblings
from dmhelpers.questions.simulate import STOPWORDS

# A small documentation corpus: one chunk per topic, each with enough prose to ask about.
CORPUS = {
    "zipfile-read": "ZipFile.read(name, pwd=None) returns the bytes of the member name in the archive. The archive "
                    "must be open for reading or appending. Use ZipFile.open to stream a large member instead of "
                    "loading it into memory at once.",
    "zipfile-write": "ZipFile.write(filename, arcname=None) adds the file named filename to the archive under the "
                     "name arcname. The archive must be opened with mode 'w', 'x' or 'a'. Directories are added "
                     "without their contents; walk the tree yourself to archive a whole folder.",
    "csv-reader": "csv.reader(csvfile, dialect='excel') returns a reader object that iterates over lines in the "
                  "given csvfile. Each row read from the csv file is returned as a list of strings. Open the file "
                  "with newline='' so that quoted fields containing line breaks are parsed correctly.",
    "csv-dictwriter": "csv.DictWriter maps dictionaries onto output rows. The fieldnames parameter is a sequence of "
                      "keys that identify the order in which values in the dictionary are written. Call "
                      "writeheader() once to write a row with the field names before the data rows.",
    "json-loads": "json.loads(s) deserializes a str, bytes or bytearray instance containing a JSON document to a "
                  "Python object. If the data being deserialized is not a valid JSON document, a JSONDecodeError "
                  "is raised, which carries the line and column of the problem.",
    "json-dumps": "json.dumps(obj, indent=None, sort_keys=False) serializes obj to a JSON formatted string. Pass "
                  "indent to pretty-print nested objects with that many spaces per level, and sort_keys=True to "
                  "output dictionaries with their keys in sorted order for stable diffs.",
    "datetime-strptime": "datetime.strptime(date_string, format) returns a datetime corresponding to date_string, "
                         "parsed according to format. A ValueError is raised if the date_string and format cannot "
                         "be parsed by time.strptime or if it returns a value which is not a time tuple.",
    "datetime-timedelta": "A timedelta object represents a duration, the difference between two dates or times. "
                          "Only days, seconds and microseconds are stored internally; arguments such as weeks, hours "
                          "and minutes are converted. Adding a timedelta to a datetime gives a new datetime.",
    "re-sub": "re.sub(pattern, repl, string, count=0) returns the string obtained by replacing the leftmost "
              "non-overlapping occurrences of pattern in string by the replacement repl. If the pattern is not "
              "found, string is returned unchanged. repl can be a string or a function called for every match.",
    "re-compile": "re.compile(pattern, flags=0) compiles a regular expression pattern into a regular expression "
                  "object, which can be used for matching with its match, search and other methods. Saving the "
                  "compiled object is more efficient when the expression is used several times in one program.",
    "pathlib-glob": "Path.glob(pattern) yields all existing files of any kind matching the given relative pattern "
                    "in the directory represented by this path. The double star pattern means this directory and "
                    "all subdirectories, recursively, so Path('.').glob('**/*.py') lists every Python source file.",
    "pathlib-read-text": "Path.read_text(encoding=None) returns the decoded contents of the pointed-to file as a "
                         "string. The file is opened, read and closed for you. Give the encoding explicitly, for "
                         "example utf-8, because the default depends on the locale of the machine.",
    "os-environ": "os.environ is a mapping object representing the string environment of the process. The "
                  "mapping is captured the first time the os module is imported. Changes to os.environ are passed "
                  "to child processes started afterwards with subprocess or os.system.",
    "shutil-copytree": "shutil.copytree(src, dst, dirs_exist_ok=False) recursively copies an entire directory tree "
                       "rooted at src to a directory named dst and returns the destination directory. With "
                       "dirs_exist_ok=True the copy goes into an existing destination instead of failing.",
    "itertools-groupby": "itertools.groupby(iterable, key=None) makes an iterator that returns consecutive keys "
                         "and groups from the iterable. Generally the iterable needs to already be sorted on the "
                         "same key function, because a new group starts every time the value of the key changes.",
    "collections-counter": "collections.Counter is a dict subclass for counting hashable objects. Elements are "
                           "stored as dictionary keys and their counts are stored as dictionary values. The "
                           "most_common(n) method lists the n most common elements and their counts.",
    "functools-lru-cache": "functools.lru_cache(maxsize=128) is a decorator that wraps a function with a "
                           "memoizing callable that saves up to the maxsize most recent calls. It can save time "
                           "when an expensive or I/O bound function is periodically called with the same arguments.",
    "logging-basicconfig": "logging.basicConfig(level, format, filename) does basic configuration for the logging "
                           "system by creating a StreamHandler with a default Formatter and adding it to the root "
                           "logger. It does nothing if the root logger already has handlers configured.",
    "argparse-add-argument": "ArgumentParser.add_argument(name or flags, action, nargs, default, type, help) "
                             "defines how a single command-line argument should be parsed. Options start with a "
                             "dash, positional arguments do not; type converts the string from the command line.",
    "subprocess-run": "subprocess.run(args, capture_output=False, check=False, timeout=None) runs the command "
                      "described by args, waits for it to complete, then returns a CompletedProcess instance. With "
                      "check=True a non-zero exit code raises CalledProcessError with the output attached.",
    "time-perf-counter": "time.perf_counter() returns the value in fractional seconds of a performance counter, "
                         "a clock with the highest available resolution to measure a short duration. The reference "
                         "point of the returned value is undefined, so only the difference between calls is valid.",
    "random-sample": "random.sample(population, k) returns a k length list of unique elements chosen from the "
                     "population sequence. It is used for random sampling without replacement. The resulting list "
                     "is in selection order, so all sub-slices are also valid random samples.",
    "statistics-median": "statistics.median(data) returns the median, the middle value, of numeric data, using "
                         "the common mean of two middle values method when the number of data points is even. "
                         "If data is empty, StatisticsError is raised.",
    "hashlib-sha256": "hashlib.sha256() creates a hash object for the SHA-256 algorithm. Feed it bytes with the "
                      "update() method as often as needed, then call hexdigest() to get the digest as a string of "
                      "hexadecimal digits, which is safe to store in text files or compare.",
    "textwrap-dedent": "textwrap.dedent(text) removes any common leading whitespace from every line in text. This "
                       "can be used to make triple-quoted strings line up with the left edge of the display, while "
                       "still presenting them in the source code in indented form.",
    "tempfile-temporarydirectory": "tempfile.TemporaryDirectory() securely creates a temporary directory and "
                                   "returns an object usable as a context manager. On completion of the context or "
                                   "destruction of the object, the directory and everything in it are removed.",
    "sqlite3-connect": "sqlite3.connect(database, timeout=5.0) opens a connection to the SQLite database file. "
                       "Use the special name ':memory:' to open a connection to a database that lives in RAM. "
                       "Commit a transaction with the connection's commit() method or the changes are lost.",
    "urllib-urlparse": "urllib.parse.urlparse(urlstring) parses a URL into six components, returning a named tuple "
                       "with scheme, netloc, path, params, query and fragment. Each item is a string, possibly "
                       "empty. Use urlunparse() to combine the components back into a URL.",
    "heapq-heappush": "heapq.heappush(heap, item) pushes the value item onto the heap, maintaining the heap "
                      "invariant. heapq.heappop(heap) pops and returns the smallest item from the heap. A plain "
                      "list used with these functions works as a priority queue.",
    "dataclasses-field": "dataclasses.field(default_factory=list) gives a field of a dataclass a mutable default. "
                         "Sharing one list between instances would be a bug, so the dataclass calls the factory "
                         "for every new instance that does not pass its own value.",
    "decimal-constants": "ROUND_HALF_UP = 'ROUND_HALF_UP'\nROUND_UP = 'ROUND_UP'\n__libmpdec_version__ = '2.5.1'",
}
TEXTS, IDS = list(CORPUS.values()), list(CORPUS)
USABLE = len(CORPUS) - 1  # the decimal constants table has no prose to ask about


# Words the question templates bring along ("Which function deals with ..."): not evidence of the chunk's topic.
FORM_WORDS = {"function", "deals", "work", "know", "handle", "handled", "role", "purpose", "way", "python", "use"}


def content_words(text: str) -> set[str]:
    words = {w.strip("_") for w in re.findall(r"[a-z0-9_]+", text.lower())}  # "__bool__" is "bool"
    return {w for w in words if len(w) > 1 and w not in STOPWORDS | FORM_WORDS}


def test_offline_questions_are_deterministic_labelled_and_not_copied():
    questions, relevance = generate_questions(TEXTS, IDS, n=20, seed=0)
    assert (questions, relevance) == generate_questions(TEXTS, IDS, n=20, seed=0)
    assert generate_questions(TEXTS, IDS, n=20, seed=1)[0] != questions
    assert len(questions) == len(relevance) == 20
    assert len({" ".join(q.lower().split()) for q in questions}) == 20
    for question, rel in zip(questions, relevance):
        assert len(rel) == 1 and rel[0][1] == 1.0 and rel[0][0] in CORPUS and rel[0][0] != "decimal-constants"
        chunk = CORPUS[rel[0][0]]
        assert question.endswith("?") and 4 <= len(question.split()) <= 25, question
        assert question.lower() not in chunk.lower() and question[:-1].lower() not in chunk.lower()
        assert content_words(question) & content_words(chunk), (question, chunk)
        words, chunk_words = re.findall(r"\w+", question.lower()), " ".join(re.findall(r"\w+", chunk.lower()))
        assert not any(" ".join(words[i:i + 6]) in chunk_words for i in range(len(words) - 5)), question


def test_offline_questions_vary_in_form():
    questions = [q for seed in range(3) for q in generate_questions(TEXTS, IDS, n=USABLE, seed=seed)[0]][:40]
    assert len(questions) == 40
    assert len({q.split()[0] for q in questions}) >= 4
    assert len({" ".join(q.split()[:2]) for q in questions}) >= 6


def test_duplicate_questions_are_dropped_and_a_shortfall_is_warned():
    # Two copies of five chunks: the copies get the same offline question, so only five survive.
    texts, ids = TEXTS[:5] * 2, [f"{i}-{copy}" for copy in "ab" for i in IDS[:5]]
    with pytest.warns(UserWarning, match="Only 5 of 10 questions"):
        questions, relevance = generate_questions(texts, ids, n=10)
    assert len(questions) == len({q.lower() for q in questions}) == 5
    assert len({texts[ids.index(r[0][0])] for r in relevance}) == 5  # one question per distinct text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ids": IDS[:-1]}, r"same length, got 31 texts and 30 ids"),
    ({"texts": [], "ids": []}, r"texts is empty.*Build the store"),
    ({"n": 0}, r"n must be .* at least 1, got 0.*N_QUESTIONS"),
    ({"n": USABLE + 1}, rf"only {USABLE} of 31 chunks .* smaller N_QUESTIONS \(at most {USABLE}\)"),
    ({"ids": ["same"] * 31}, r"ids must be unique, but 'same' appears 31 times"),
    ({"llm": ""}, r"llm must be 'offline', 'local' or a chat model name"),
    ({"llm": None}, r"llm must be 'offline', 'local' or a chat model name"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    args = {"texts": TEXTS, "ids": IDS, "n": 5, **kwargs}
    with pytest.raises(InputError, match=message):
        generate_questions(**args)


# --- The LLM path against a fake OpenAI-compatible chat server ---------------------------------------------------

Reply = Callable[[dict], tuple[int, dict]]


def completion(content: str | None = None, refusal: str | None = None) -> tuple[int, dict]:
    return 200, chat_completion(content, refusal=refusal)


def error(status: int, message: str, param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


EXAMPLE_QUESTION = EXAMPLES[0][3]


def chunk_of(body: dict) -> str:
    return chunk_asked_about(body, CORPUS)


def question_for(chunk_id: str, tag: str = "") -> str:
    """A question a fake model writes about a chunk: it names the chunk and a word of it (as grounding requires)."""
    word = max(re.findall(r"[a-z]{4,}", CORPUS[chunk_id].lower()), key=len)
    return f"Where do the docs explain {chunk_id} and {word}{tag}?"


def good_reply(body: dict) -> tuple[int, dict]:
    return completion(question_for(chunk_of(body)))


@pytest.fixture()
def chat_server(monkeypatch) -> Iterator[Callable[[Reply], list[dict]]]:
    """Start a /v1/chat/completions server that answers with ``reply(body)``; returns the requests it received."""
    servers = []

    def start(reply: Reply, key: str = "test-key") -> list[dict]:
        requests: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(body)
                status, payload = reply(body) if self.path == "/v1/chat/completions" else error(404, "no route")
                send_reply(self, status, payload)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
        return requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def read_cache(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_llm_questions_are_returned_and_cached(chat_server, tmp_path):
    requests = chat_server(good_reply, key="sk-SECRET-never-written")
    cache = tmp_path / "questions.jsonl"
    questions, relevance = generate_questions(TEXTS, IDS, n=5, llm="fake-model", cache=cache, progress=False)
    assert questions == [question_for(r[0][0]) for r in relevance] and len(questions) == 5
    assert all(r[0][1] == 1.0 for r in relevance)
    assert not any("response_format" in r for r in requests)  # plain text: what every chat server returns
    assert requests[0]["model"] == "fake-model" and requests[0]["messages"][0]["role"] == "system"
    assert requests[0]["messages"][-1]["content"].startswith("Page: documentation\nSentence: ")
    lines = read_cache(cache)  # in the order the replies arrived (up to 8 requests are in flight)
    assert {line["chunk_id"]: line["question"] for line in lines} == {r[0][0]: q for q, r in zip(questions, relevance)}
    assert len(lines) == 5
    assert all(line["model"] == "fake-model" and line["prompt"] == PROMPT_SHA and len(line["text_sha"]) == 16
               for line in lines)
    assert "SECRET" not in cache.read_text()


def test_llm_offline_name_never_calls_the_server(chat_server):
    requests = chat_server(good_reply)
    questions, _ = generate_questions(TEXTS, IDS, n=5, llm="offline")
    assert len(questions) == 5 and requests == []


def test_llm_replies_are_cut_to_their_question_and_page_titles_are_shown(chat_server):
    """Small models add a preamble and run on with an answer: the question is what lies between."""
    def reply(body):
        return completion(f"Sure! Here it is.\n{question_for(chunk_of(body))} It is explained on the page.\nMore.")

    requests = chat_server(reply)
    titles = [f"Python: module {cid.split('-')[0]}" for cid in IDS]
    questions, relevance = generate_questions(TEXTS, IDS, n=4, llm="fake-model", titles=titles, progress=False)
    assert questions == [question_for(r[0][0]) for r in relevance]
    assert all(r["messages"][-1]["content"].startswith(f"Page: module {chunk_of(r).split('-')[0]}\n")
               for r in requests)
    with pytest.raises(InputError, match="one page title per chunk"):
        generate_questions(TEXTS, IDS, n=4, llm="fake-model", titles=titles[:-1], progress=False)


def test_llm_retries_a_reply_with_no_question_then_skips_and_reports_a_refusing_chunk(chat_server, capsys):
    calls = {"n": 0}

    def reply(body):
        calls["n"] += 1
        if calls["n"] == 1:
            return completion("Sure! Here is a question: what is a zip file")  # no question: retried
        if chunk_of(body) == "csv-reader":
            return completion(None, refusal="I cannot help with that.")
        return good_reply(body)

    requests = chat_server(reply)
    # Ask for every usable chunk but one: the walk must pass the refusing chunk and use all the others.
    questions, relevance = generate_questions(TEXTS, IDS, n=USABLE - 1, llm="fake-model", progress=False)
    chunks = [r[0][0] for r in relevance]
    assert len(questions) == USABLE - 1 and "csv-reader" not in chunks
    assert questions == [question_for(c) for c in chunks]
    assert sum(chunk_of(r) == "csv-reader" for r in requests) == 3  # one try and two retries
    assert len(requests) == USABLE - 1 + 3 + 1  # plus the retried reply with no question
    out = capsys.readouterr().out
    assert "Skipped 1 chunk" in out and "csv-reader: refused: I cannot help with that." in out


def test_llm_rerun_resumes_from_the_cache_even_past_a_torn_line(chat_server, tmp_path):
    cache = tmp_path / "questions.jsonl"
    chat_server(good_reply)
    first = generate_questions(TEXTS, IDS, n=5, llm="fake-model", cache=cache, progress=False)
    with open(cache, "a") as f:
        f.write('{"model": "fake-model", "chunk_id": "json-lo')  # a crash mid-write

    failing = chat_server(lambda body: error(500, "the server is down"))
    assert generate_questions(TEXTS, IDS, n=5, llm="fake-model", cache=cache, max_retries=0,
                              progress=False) == first
    assert failing == []  # every question came from the cache
    with pytest.raises(QuestionGenerationError, match="chat server failed.*kept in .*rerun to resume"):
        generate_questions(TEXTS, IDS, n=6, llm="fake-model", cache=cache, max_retries=0, progress=False)

    # A working server appends after the torn line, which stays ignored.
    working = chat_server(good_reply)
    questions, relevance = generate_questions(TEXTS, IDS, n=6, llm="fake-model", cache=cache, progress=False)
    assert len(working) == 1
    assert questions[:5] == first[0] and len(questions) == 6
    lines = cache.read_text().splitlines()
    assert len(lines) == 7 and lines[5].startswith('{"model": "fake-model", "chunk_id": "json-lo')
    assert json.loads(lines[6])["question"] == questions[5] == question_for(relevance[5][0][0])
    generate_questions(TEXTS, IDS, n=5, llm="other-model", cache=cache, progress=False)
    assert len(working) == 1 + 5  # another model's questions are not reused


def test_llm_copies_and_repeats_are_asked_again_and_repeat_questions_are_sampled(chat_server):
    """A small model's habits: the worked example's question copied, and the same question again when asked for a
    second one. The second question about a chunk is another wording, sampled (seeded); a copy or a repeat is asked
    again, sampled hotter; the run goes on with what the retries give."""
    def reply(body):
        chunk = chunk_of(body)
        if body.get("temperature") == 0:  # the model's own question
            return completion(EXAMPLE_QUESTION if chunk == "csv-reader" else question_for(chunk))
        if body["temperature"] == 0.5 and body["seed"] == 3 and chunk == "json-loads":
            return completion(question_for(chunk))  # a "variant" that repeats the first question
        return completion(question_for(chunk, f" on try {body['seed']}"))

    requests = chat_server(reply)
    questions, relevance = generate_questions(TEXTS, IDS, n=10, llm="fake-model", per_chunk=2, concurrency=1,
                                              progress=False)
    chunks = [r[0][0] for r in relevance]
    assert len(questions) == 10 and len(set(questions)) == 10 and chunks[0] == chunks[1]
    assert questions[:2] == [question_for(chunks[0]), question_for(chunks[0], " on try 3")]  # variant 1: seed 3
    assert all(r["max_tokens"] == 64 for r in requests)
    sampled = [r for r in requests if r["temperature"] != 0]
    assert sampled and all(r["temperature"] in (0.5, 0.7) and r["seed"] >= 1 for r in sampled)
    assert EXAMPLE_QUESTION not in questions
    if "json-loads" in chunks:  # its repeat was asked again, hotter
        assert question_for("json-loads", " on try 4") in questions
        assert any(r["temperature"] == 0.7 and r["seed"] == 4 and chunk_of(r) == "json-loads" for r in requests)


def test_a_run_whose_questions_are_all_cached_needs_no_server_and_no_key(chat_server, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "questions.jsonl"
    chat_server(lambda body: completion(question_for(chunk_of(body), f" on try {body.get('seed', 0)}")))
    first = generate_questions(TEXTS, IDS, n=6, llm="fake-model", cache=cache, per_chunk=3)
    assert "0 of 6 questions read from the question cache, 6 written now, by fake-model." in capsys.readouterr().out
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    assert generate_questions(TEXTS, IDS, n=6, llm="fake-model", cache=cache, per_chunk=3) == first
    assert "6 of 6 questions read from the question cache, 0 written now" in capsys.readouterr().out


@pytest.mark.parametrize(("question", "why"), [
    ("Your question here", "copied the placeholder"),
    (EXAMPLE_QUESTION.upper(), "copied a worked example's question"),
    ("The csv module reads and writes comma separated values one row per line of the file?", "copied the chunk"),
    ("How do I stop a thread from hanging forever when the server is slow to answer?", "echoed a worked example"),
    ("What does Sentence: mean for the csv module?", "repeated the prompt's labels"),
    ("Can I use this in a loop to read csv values?", "points at 'this'"),
    ("How does the csv.parse_rows() function work?", "names 'csv.parse_rows'"),
    ("How do I create a Python function that returns a value?", "shares no word with its passage"),
    ("How do I read a CSV file one row at a time?", ""),
    ("How do I stop a csv reader from quoting every value?", ""),
    ("How do I use `csv.reader`?", ""),
])
def test_copies_and_ungrounded_questions_are_recognised(question, why):
    chunk = "The csv module reads and writes comma-separated values, one row per line of the file, quoting as needed."
    reason = rejected(question, chunk, Passage("csv.reader", chunk), "module csv.reader")
    assert reason.startswith(why) and bool(reason) == bool(why), reason


@pytest.mark.parametrize(("reply", "question"), [
    ("How do I read a zip file?", "How do I read a zip file?"),
    ("Question: How do I read a zip file? Use ZipFile.", "How do I read a zip file?"),
    ("Sure! I'd be glad to help. How do I read a zip file?", "How do I read a zip file?"),
    ("Here is one:\n\"How do I use os.path.join?\"", "How do I use os.path.join?"),
    ("Zip files hold members.", None),
    ("Why?", None),
    ("", None),
])
def test_a_reply_is_cut_to_its_question(reply, question):
    assert parse_reply(reply)[0] == question


PYDOC_CHUNK = """The zipfile module lets you create, read, write, append and list the members of a ZIP file archive.

zipfile.ZipFile.read(name, pwd=None)
    Return the bytes of the file name in the archive, which must be open for reading.
    The archive must be open for read or append.

__iter__(self)
    Implement iter(self).

zipfile.ZipFile.extract(member, path=None, pwd=None)
    Extract a member from the archive to the current working directory or to path.

    Changed in version 3.6: Calling extract() on a closed ZipFile raises a ValueError."""


def test_a_chunk_is_split_into_passages_people_ask_about():
    found = passages(PYDOC_CHUNK)
    assert found == [
        Passage("zipfile.ZipFile.read", "Return the bytes of the file name in the archive, which must be open for "
                                        "reading."),
        Passage("zipfile.ZipFile.extract", "Extract a member from the archive to the current working directory or "
                                           "to path."),
        Passage(None, "The zipfile module lets you create, read, write, append and list the members of a ZIP file "
                      "archive."),
    ]  # named passages before prose; dunder methods, their boilerplate and version notes are dropped
    assert passages("__ior__(self, other)\n__iter__(self)\n__len__(self)") == []


def test_repeat_questions_reword_the_first_passage_before_moving_on():
    a, b = Passage("f", "first sentence"), Passage("g", "second sentence")
    assert plan([a, b], 1) == [(a, 0)]
    assert plan([a, b], 3) == [(a, 0), (a, 1), (a, 2)]
    assert plan([a, b], 5) == [(a, 0), (a, 1), (a, 2), (b, 0), (a, 4)]
    assert plan([], 3) == []


def test_siblings_pair_each_seen_test_question_with_its_nearest_training_question():
    vectors = {"a1": [1, 0], "a2": [0.6, 0.8], "b1": [0, 1], "t-a": [0.8, 0.6], "t-c": [1, 0]}
    def embed(texts):
        return np.array([vectors[t] for t in texts], dtype=float)
    found = siblings(embed, ["a1", "a2", "b1"], [[("A", 1.0)], [("A", 1.0)], [("B", 1.0)]],
                     ["t-a", "t-c"], [[("A", 1.0)], [("C", 1.0)]])
    assert [(s.test, s.train) for s in found] == [("t-a", "a2")] and found[0].cosine == pytest.approx(0.96)
    assert sibling_summary(found) == {"n": 1, "median": 0.96, "p10": 0.96} and sibling_summary([])["n"] == 0


def test_the_shipped_questions_are_keyed_by_the_current_prompt():
    """The questions shipped for the default corpus and the workshop preset: written with today's prompt (an
    edited prompt must rewrite them, or every run would ask the model again)."""
    lines = [json.loads(line) for f in sorted(SHIPPED.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(lines) >= 400 and {e["prompt"] for e in lines} == {PROMPT_SHA}
    assert all(parse_reply(e["question"])[0] == e["question"] for e in lines)


def test_llm_without_a_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(QuestionGenerationError, match="needs OPENAI_API_KEY.*LLM = 'simulated'") as info:
        generate_questions(TEXTS, IDS, n=3, llm="gpt-4o-mini")
    assert isinstance(info.value, DeepMemoryError)


# --- per_chunk, split, save and load (integration with notebook 02) -------------------------------------------------
from dmhelpers import load_questions, save_questions, split_questions  # noqa: E402


def test_per_chunk_writes_distinct_questions_about_the_same_chunks():
    questions, relevance = generate_questions(TEXTS, IDS, 12, per_chunk=3, seed=4)
    chunk_ids = [rel[0][0] for rel in relevance]
    assert len(questions) == 12 and len(set(questions)) == 12
    assert all(chunk_ids.count(c) >= 2 for c in chunk_ids)  # repeated chunks, as real users repeat them
    assert len(set(chunk_ids)) <= 6
    with pytest.raises(InputError, match="per_chunk must be a whole number"):
        generate_questions(TEXTS, IDS, 4, per_chunk=0)


def test_split_is_seeded_disjoint_and_complete():
    questions = [f"question {i}?" for i in range(10)]
    relevance = [[(f"c{i}", 1.0)] for i in range(10)]
    (tq, tr), (sq, sr) = split_questions(questions, relevance, train_fraction=0.7, seed=1)
    assert len(tq) == 7 and len(sq) == 3 and sorted(tq + sq) == sorted(questions)
    assert all(r[0][0] == f"c{q.split()[1][:-1]}" for q, r in zip(tq + sq, tr + sr))
    assert split_questions(questions, relevance, 0.7, seed=1) == ((tq, tr), (sq, sr))
    for bad, match in ((1.0, "between 0 and 1"), (0.01, "too few to split")):
        with pytest.raises(InputError, match=match):
            split_questions(questions, relevance, bad)


def test_save_and_load_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "q" / "train.jsonl"
    save_questions(path, ["How do I zip?", "What is csv?"], [[("a", 1.0)], [("b", 0.5), ("c", 1.0)]])
    assert load_questions(path) == (["How do I zip?", "What is csv?"], [[("a", 1.0)], [("b", 0.5), ("c", 1.0)]])
    with pytest.raises(InputError, match="Run notebook 02 first"):
        load_questions(tmp_path / "missing.jsonl")
    path.write_text('{"question": "ok?", "relevance": [["a", 1]]}\n{broken\n')
    with pytest.raises(InputError, match="line 2 is not a saved question"):
        load_questions(path)
